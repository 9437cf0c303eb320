"""The KPI model of predictive routing: how likely is *this* agent to achieve the queue's KPI
with *this* customer, for every candidate agent at once.

Trained per queue and KPI on interaction history: customer features, interaction features
(context), customer-agent pair features (the agent speaks the customer's language), agent
features and agent identity. Two stages:

1. a **base** LightGBM model (agent-blind apart from the agent and pair features) of the
   KPI — what an average agent with those features does for this customer;
2. a **hierarchical agent × customer model** on top, per agent a: logit p = base + β_a +
   x·Γ_a (x: customer features), fitted by penalised Newton with the base as offset
   (cross-fitted, so the offset does not carry the training noise). The ridge penalty is a
   Gaussian prior centred on the base: an agent with little history gets β_a, Γ_a near 0,
   i.e. the mean, and moves away only as far as their own data support. Penalties are
   chosen on the held-out slice. (Per-agent slopes on the interaction features were
   measured too: no better over three seeds, so left out.)

Measured on the simulator (``bench/routing.py`` prints it per seed), this beats the
alternative ``agent_model="target_encoding"`` (LightGBM with the agent as a categorical
feature plus an empirical-Bayes-shrunk target encoding of the agent's rate) where it
matters: it ranks the agents for a customer closer to the truth and captures more of the
oracle's uplift, because an agent's effect that varies with the customer is estimated per
agent with its own shrinkage rather than from a handful of tree splits. Held-out log loss
is about equal (the customer part dominates it). Both are kept so the comparison can be
re-run on real history.

Binary KPIs are calibrated by Platt scaling on the latest ``holdout_share`` of history
(isotonic would flatten close scores into ties and lose the ranking among agents, which is
the model's whole use). Amounts (sales value, handle time) use squared error, same stages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightgbm as lgb
import numpy as np

from opportune.core.predictive import Posterior
from opportune.ml.evaluation import auc, brier, ece, log_loss, rmse

AgentModel = Literal["ridge", "target_encoding"]
_GRID_INTERCEPT = (3.0, 10.0, 30.0, 100.0)
_GRID_SLOPES = (10.0, 30.0, 100.0, 300.0, 1e4)
_HISTORY_GROUPS = ((0, 100, "<100"), (100, 1000, "100-999"), (1000, math.inf, "≥1000"))
# Per-agent slopes on at most this many customer features (those the base model uses most):
# the Newton step holds a p × p Hessian per row, and a customer with a hundred journey
# features would need gigabytes for what a handful of strong features already carry.
MAX_SLOPE_FEATURES = 8


@dataclass(frozen=True)
class TrainingSet:
    """Labelled history of one queue and KPI, one row per handled interaction."""

    customer: np.ndarray  # (n, d) customer features
    context: np.ndarray  # (n, k) interaction features; k may be 0
    agents: np.ndarray  # (n,) agent ids
    labels: np.ndarray  # (n,) KPI label
    times_ms: np.ndarray  # (n,) when: the latest rows are held out
    pair: np.ndarray | None = None  # (n, j) customer-agent features (speaks their language)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> TrainingSet:
        """The rows at ``idx``, every column alike.

        >>> d = TrainingSet(np.zeros((3, 1)), np.zeros((3, 0)), np.array(["a", "b", "c"]),
        ...                 np.array([1.0, 0.0, 1.0]), np.array([1, 2, 3]))
        >>> part = d.take(np.array([2, 0]))
        >>> len(part), part.agents.tolist(), part.labels.tolist()
        (2, ['c', 'a'], [1.0, 1.0])
        """
        return TrainingSet(
            self.customer[idx],
            self.context[idx],
            self.agents[idx],
            self.labels[idx],
            self.times_ms[idx],
            None if self.pair is None else self.pair[idx],
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -30, 30))), dtype=float)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(p / (1 - p)), dtype=float)


class RoutingModel:
    """A fitted KPI model; build it with :meth:`fit`."""

    def __init__(self) -> None:
        self.binary = True
        self.agent_model: AgentModel = "ridge"
        self.agent_features: dict[str, tuple[float, ...]] = {}
        self.n_agent_features = 0
        self.n_pair = 0
        self.base: lgb.Booster | None = None
        self.index: dict[str, int] = {}
        self.theta = np.zeros((0, 1))
        self.theta_sd = np.zeros(0)  # sd of each agent's intercept (logit / unit scale)
        self.prior_sd = 1.0
        self.platt = (1.0, 0.0)
        self.te: dict[str, float] = {}
        self.te_default = 0.0
        self.mean = 0.0
        self.card: dict[str, Any] = {}
        self.slope_idx = np.zeros(0, dtype=int)  # customer columns with per-agent slopes
        self._blocks: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    # ---- persistence ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Everything the model needs to predict, as JSON (the trees as LightGBM's text)."""
        assert self.base is not None
        return {
            "format": 1,
            "binary": self.binary,
            "agentModel": self.agent_model,
            "agentFeatures": {a: list(v) for a, v in self.agent_features.items()},
            "nAgentFeatures": self.n_agent_features,
            "nPair": self.n_pair,
            "base": self.base.model_to_string(),
            "index": self.index,
            "theta": self.theta.tolist(),
            "thetaSd": self.theta_sd.tolist(),
            "priorSd": self.prior_sd,
            "platt": list(self.platt),
            "te": self.te,
            "teDefault": self.te_default,
            "mean": self.mean,
            "slopeIdx": self.slope_idx.tolist(),
            "card": self.card,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoutingModel:
        if data.get("format") != 1:
            raise ValueError(f"unknown routing model format {data.get('format')!r}")
        m = cls()
        m.binary = bool(data["binary"])
        m.agent_model = data["agentModel"]
        m.agent_features = {a: tuple(v) for a, v in data["agentFeatures"].items()}
        m.n_agent_features = int(data["nAgentFeatures"])
        m.n_pair = int(data["nPair"])
        m.base = lgb.Booster(model_str=data["base"])
        m.index = {str(a): int(k) for a, k in data["index"].items()}
        m.theta = np.asarray(data["theta"], dtype=float).reshape(len(m.index), -1)
        if not len(m.index):
            m.theta = np.zeros((0, 1))
        m.theta_sd = np.asarray(data["thetaSd"], dtype=float)
        m.prior_sd = float(data["priorSd"])
        m.platt = (float(data["platt"][0]), float(data["platt"][1]))
        m.te = {str(a): float(v) for a, v in data["te"].items()}
        m.te_default = float(data["teDefault"])
        m.mean = float(data["mean"])
        m.slope_idx = np.asarray(data["slopeIdx"], dtype=int)
        m.card = dict(data["card"])
        return m

    # ---- fitting --------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        data: TrainingSet,
        *,
        binary: bool = True,
        agent_features: Mapping[str, Sequence[float]] | None = None,
        agent_model: AgentModel = "ridge",
        holdout_share: float = 0.2,
        num_threads: int = 1,
        rounds: int = 150,
        seed: int = 0,
    ) -> RoutingModel:
        """Fit on ``data``; the latest ``holdout_share`` of rows choose the penalties, fit
        the calibration and are what the model card reports on.

        ``num_threads`` is capped at 2; the default is 1 because on a 2-core machine with the
        other core busy two OpenMP threads were measured six times slower (8.3 s against
        1.3 s for 18,000 rows), and a single thread is fast at this size."""
        m = cls()
        m.binary, m.agent_model = binary, agent_model
        m.agent_features = {
            k: tuple(float(x) for x in v) for k, v in (agent_features or {}).items()
        }
        m.n_agent_features = len(next(iter(m.agent_features.values()), ()))
        m.n_pair = 0 if data.pair is None else data.pair.reshape(len(data), -1).shape[1]
        order = np.argsort(data.times_ms, kind="stable")
        cut = int(len(order) * (1 - holdout_share))
        train, hold = data.take(order[:cut]), data.take(order[cut:])
        m.mean = float(train.labels.mean())
        params = {
            "objective": "binary" if binary else "regression",
            "learning_rate": 0.05,
            "num_leaves": 15,
            "min_data_in_leaf": 50,
            "lambda_l2": 1.0,
            "num_threads": min(2, num_threads),
            "verbose": -1,
            "seed": seed,
            "deterministic": True,
        }
        agents = sorted({str(a) for a in data.agents} | set(m.agent_features))
        m.index = {a: k for k, a in enumerate(agents)}
        if agent_model == "ridge":
            m.base = lgb.train(params, lgb.Dataset(m._base_x(train), train.labels), rounds)
            d = data.customer.shape[1]
            if d <= MAX_SLOPE_FEATURES:
                m.slope_idx = np.arange(d)
            else:
                gain = m.base.feature_importance("gain")[:d]
                m.slope_idx = np.sort(np.argsort(-gain, kind="stable")[:MAX_SLOPE_FEATURES])
            offset = m._cross_fit(train, params, rounds, seed)
            hold_offset = m._raw_base(hold)
            best = None
            groups, hold_codes = m._group(train), m._codes(hold)
            for li in _GRID_INTERCEPT:
                for ls in _GRID_SLOPES:
                    theta, _ = m._fit_agents(train, groups, offset, li, ls)
                    loss = m._loss(hold, hold_offset + m._agent_term(hold, theta, hold_codes))
                    if best is None or loss < best[0]:
                        best = (loss, li, ls)
            assert best is not None
            _, li, ls = best
            m.theta, m.theta_sd = m._fit_agents(train, groups, offset, li, ls)
            m.prior_sd = 1 / math.sqrt(li)
            m.card["penalty"] = {"intercept": li, "slopes": ls}
        else:
            m._fit_target_encoding(train, params, rounds)
        raw = m._raw(hold)
        if binary:
            m.platt = _platt(raw, hold.labels)
        m.card.update(m._model_card(train, hold))
        return m

    def _base_x(self, d: TrainingSet) -> np.ndarray:
        feats = np.array(
            [
                self.agent_features.get(str(a), (math.nan,) * self.n_agent_features)
                for a in d.agents
            ],
            dtype=float,
        ).reshape(len(d), self.n_agent_features)
        pair = np.zeros((len(d), 0)) if d.pair is None else d.pair.reshape(len(d), -1)
        if pair.shape[1] != self.n_pair:
            raise ValueError(f"{self.n_pair} pair feature(s) expected, got {pair.shape[1]}")
        cols = [d.customer, d.context.reshape(len(d), -1), pair, feats]
        if self.agent_model == "target_encoding":
            te = np.array([self.te.get(str(a), self.te_default) for a in d.agents])
            ids = np.array([self.index.get(str(a), -1) for a in d.agents], dtype=float)
            cols += [te[:, None], ids[:, None]]
        return np.hstack(cols)

    def _raw_base(self, d: TrainingSet) -> np.ndarray:
        """Base predictions on the link scale (logit, or the amount itself)."""
        assert self.base is not None
        # One thread: a routing decision scores a few dozen rows, and waking OpenMP's
        # threads for that costs more than it saves (measured: ~2 ms against ~0.4 ms).
        return np.asarray(
            self.base.predict(self._base_x(d), raw_score=True, num_threads=1), dtype=float
        )

    def _cross_fit(
        self, train: TrainingSet, params: dict[str, Any], rounds: int, seed: int
    ) -> np.ndarray:
        """Out-of-fold base predictions (two folds): an in-sample offset would already hold
        part of each row's noise and shrink the agent effects fitted on top of it."""
        fold = np.random.default_rng(seed).random(len(train)) < 0.5
        out = np.zeros(len(train))
        x = self._base_x(train)
        for k in (True, False):
            fit_rows, pred_rows = fold == k, fold != k
            booster = lgb.train(params, lgb.Dataset(x[fit_rows], train.labels[fit_rows]), rounds)
            out[pred_rows] = booster.predict(x[pred_rows], raw_score=True)
        return out

    def _design(self, d: TrainingSet) -> np.ndarray:
        """Per-agent terms: an intercept and the chosen customer features (a missing
        value contributes nothing)."""
        x = np.nan_to_num(d.customer[:, self.slope_idx], nan=0.0)
        return np.hstack([np.ones((len(d), 1)), x])

    def _group(self, train: TrainingSet) -> tuple[np.ndarray, ...]:
        """Rows sorted by agent: order, agent codes, counts, group starts, row -> group."""
        k = self._codes(train)
        order = np.argsort(k, kind="stable")
        ks, counts = np.unique(k[order], return_counts=True)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return order, ks, counts, starts, np.repeat(np.arange(len(ks)), counts)

    def _codes(self, d: TrainingSet) -> np.ndarray:
        return np.array([self.index.get(str(a), -1) for a in d.agents], dtype=int)

    def _fit_agents(
        self,
        train: TrainingSet,
        groups: tuple[np.ndarray, ...],
        offset: np.ndarray,
        lam_intercept: float,
        lam_slopes: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per agent, the penalised (Gaussian-prior) fit of β, Γ with the base as offset;
        also each intercept's posterior sd (from the penalised Hessian). All agents at
        once: rows sorted by agent (``groups``), sums per agent by ``np.add.reduceat``."""
        order, ks, counts, starts, group = groups
        x, y, off = self._design(train)[order], train.labels[order], offset[order]
        p = x.shape[1]
        penalty = np.diag([lam_intercept] + [lam_slopes] * (p - 1))
        outer = x[:, :, None] * x[:, None, :]
        t = np.zeros((len(ks), p))
        if self.binary:
            for _ in range(12):
                mu = _sigmoid(off + np.einsum("ij,ij->i", x, t[group]))
                grad = np.add.reduceat(x * (mu - y)[:, None], starts) + t @ penalty
                w = (mu * (1 - mu))[:, None, None]
                hess = np.add.reduceat(outer * w, starts) + penalty
                step = np.linalg.solve(hess, grad[..., None])[..., 0]
                t -= step
                if np.abs(step).max() < 1e-6:
                    break
            mu = _sigmoid(off + np.einsum("ij,ij->i", x, t[group]))
            hess = np.add.reduceat(outer * (mu * (1 - mu))[:, None, None], starts) + penalty
            var = np.ones(len(ks))
        else:
            # Gaussian: the same penalties mean prior sds in units of the residual sd.
            hess = np.add.reduceat(outer, starts) + penalty
            rhs = np.add.reduceat(x * (y - off)[:, None], starts)
            t = np.linalg.solve(hess, rhs[..., None])[..., 0]
            resid = y - off - np.einsum("ij,ij->i", x, t[group])
            var = np.add.reduceat(resid**2, starts) / np.maximum(counts - p, 1)
        theta = np.zeros((len(self.index), p))
        sd = np.full(len(self.index), 1 / math.sqrt(lam_intercept))
        theta[ks] = t
        sd[ks] = np.sqrt(var * np.linalg.inv(hess)[:, 0, 0])
        return theta, sd

    def _agent_term(
        self, d: TrainingSet, theta: np.ndarray, codes: np.ndarray | None = None
    ) -> np.ndarray:
        idx = self._codes(d) if codes is None else codes
        t = np.where(idx[:, None] >= 0, theta[np.maximum(idx, 0)], 0.0)
        return np.asarray(np.einsum("ij,ij->i", self._design(d), t), dtype=float)

    def _loss(self, d: TrainingSet, link: np.ndarray) -> float:
        if self.binary:
            return log_loss(d.labels, _sigmoid(link))
        return rmse(d.labels, link)

    def _fit_target_encoding(self, train: TrainingSet, params: dict[str, Any], rounds: int) -> None:
        """The alternative: LightGBM with the agent id (categorical) and an empirical-Bayes
        (beta-binomial / normal) shrunk mean per agent, m = prior strength by moments."""
        y = train.labels
        sums: dict[str, list[float]] = {}
        for a, v in zip(train.agents, y, strict=True):
            sums.setdefault(str(a), []).append(float(v))
        n = np.array([len(v) for v in sums.values()], dtype=float)
        means = np.array([np.mean(v) for v in sums.values()])
        grand = float(y.mean())
        within = float(np.var(y)) / max(float(n.mean()), 1.0)
        between = max(float(np.var(means)) - within, 1e-6)
        strength = float(np.var(y)) / between  # pseudo-rows of the grand mean per agent
        self.te = {
            a: (float(np.sum(v)) + strength * grand) / (len(v) + strength) for a, v in sums.items()
        }
        self.te_default = grand
        self.card["prior_strength"] = strength
        x = self._base_x(train)
        cat = [x.shape[1] - 1]
        ds = lgb.Dataset(x, y, categorical_feature=cat)
        self.base = lgb.train({**params, "cat_smooth": 20.0, "min_data_per_group": 50}, ds, rounds)

    # ---- prediction -----------------------------------------------------------------------
    def _raw(self, d: TrainingSet) -> np.ndarray:
        link = self._raw_base(d)
        if self.agent_model == "ridge":
            link = link + self._agent_term(d, self.theta)
        return link

    def _finish(self, link: np.ndarray) -> np.ndarray:
        if not self.binary:
            return link
        a, b = self.platt
        return _sigmoid(a * link + b)

    def predict(
        self,
        customer: Sequence[float],
        agent_ids: Sequence[str],
        context: Sequence[float] = (),
        pair: np.ndarray | None = None,
    ) -> np.ndarray:
        """Predicted KPI of one customer with each of ``agent_ids``, in one batched call;
        ``pair`` holds the customer-agent features, one row per agent.

        The agents' columns and effects are cached per tuple of agent ids (a queue's agents
        change rarely), so a call costs one LightGBM prediction of ``len(agent_ids)`` rows.
        """
        key = tuple(agent_ids)
        block = self._blocks.get(key)
        if block is None:
            block = self._agent_block(key)
            if len(self._blocks) < 256:
                self._blocks[key] = block
        columns, theta = block
        c = np.asarray(customer, dtype=float)
        ctx = np.asarray(context, dtype=float)
        j = self.n_pair
        if (0 if pair is None else pair.shape[1]) != j:
            raise ValueError(f"{j} pair feature(s) expected")
        x = np.empty((len(key), len(c) + len(ctx) + j + columns.shape[1]))
        x[:, : len(c)] = c
        x[:, len(c) : len(c) + len(ctx)] = ctx
        if pair is not None:
            x[:, len(c) + len(ctx) : len(c) + len(ctx) + j] = pair
        x[:, len(c) + len(ctx) + j :] = columns
        assert self.base is not None
        link = np.asarray(self.base.predict(x, raw_score=True, num_threads=1), dtype=float)
        if self.agent_model == "ridge":
            link = link + theta[:, 0] + theta[:, 1:] @ np.nan_to_num(c[self.slope_idx], nan=0.0)
        return self._finish(link)

    def _agent_block(self, agent_ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The base model's agent columns and the agent-model rows for these agents."""
        n = len(agent_ids)
        probe = TrainingSet(
            np.zeros((n, 0)),
            np.zeros((n, 0)),
            np.array(agent_ids, dtype=object),
            np.zeros(n),
            np.zeros(n),
            np.zeros((n, self.n_pair)),
        )
        columns = self._base_x(probe)[:, self.n_pair :]
        if not len(self.theta):  # target encoding: the agent is inside the trees
            return columns, np.zeros((n, 1))
        codes = self._codes(probe)
        theta = np.where(codes[:, None] >= 0, self.theta[np.maximum(codes, 0)], 0.0)
        return columns, theta

    def predict_rows(self, data: TrainingSet) -> np.ndarray:
        """Predicted KPI of each row's customer with that row's agent."""
        return self._finish(self._raw(data))

    def posteriors(self) -> dict[str, Posterior]:
        """Per agent, a normal posterior of their effect on the probability scale (at the
        mean rate), for Thompson sampling; wide for agents with little history."""
        scale = self.mean * (1 - self.mean) if self.binary else 1.0
        out = {
            a: Posterior("normal", 0.0, scale * float(self.theta_sd[k]))
            for a, k in self.index.items()
            if k < len(self.theta_sd)
        }
        return out

    def agent_effects(self, reference: TrainingSet) -> dict[str, float]:
        """Each agent's mean predicted KPI over ``reference`` customers, minus the mean over
        all agents: how far the model separates agents (pair features as in ``reference``)."""
        per = {}
        for a in self.index:
            rows = TrainingSet(
                reference.customer,
                reference.context,
                np.full(len(reference), a, dtype=object),
                reference.labels,
                reference.times_ms,
                reference.pair,
            )
            per[a] = float(self.predict_rows(rows).mean())
        centre = float(np.mean(list(per.values())))
        return {a: v - centre for a, v in per.items()}

    def _model_card(self, train: TrainingSet, hold: TrainingSet) -> dict[str, Any]:
        pred = self.predict_rows(hold)
        y = hold.labels
        card: dict[str, Any] = {
            "agent_model": self.agent_model,
            "binary": self.binary,
            "rows_train": len(train),
            "rows_holdout": len(hold),
            "mean_train": self.mean,
        }
        base = np.full(len(y), self.mean)
        if self.binary:
            card["holdout"] = {
                "auc": auc(y, pred),
                "log_loss": log_loss(y, pred),
                "brier": brier(y, pred),
                "ece": ece(y, pred),
                "base_rate_log_loss": log_loss(y, base),
                "base_rate_brier": brier(y, base),
            }
        else:
            card["holdout"] = {"rmse": rmse(y, pred), "base_rmse": rmse(y, base)}
        counts: dict[str, int] = {}
        for a in train.agents:
            counts[str(a)] = counts.get(str(a), 0) + 1
        groups = []
        for lo, hi, name in _HISTORY_GROUPS:
            members = {a for a in self.index if lo <= counts.get(a, 0) < hi}
            rows = np.array([str(a) in members for a in hold.agents], dtype=bool)
            metric = (auc if self.binary else rmse)(y[rows], pred[rows]) if rows.any() else math.nan
            groups.append(
                {
                    "history": name,
                    "agents": len(members),
                    "rows_holdout": int(rows.sum()),
                    "auc" if self.binary else "rmse": metric,
                }
            )
        card["by_history"] = groups
        effects = np.array(
            list(self.agent_effects(hold.take(np.arange(min(len(hold), 500)))).values())
        )
        card["agent_effects"] = {
            "sd": float(effects.std()),
            "p10": float(np.quantile(effects, 0.1)),
            "p90": float(np.quantile(effects, 0.9)),
        }
        return card


def _platt(link: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling: logistic regression of the label on the link, by Newton."""
    a, b = 1.0, 0.0
    x = np.column_stack([link, np.ones_like(link)])
    reg = np.diag([1e-6, 1e-6])
    for _ in range(25):
        mu = _sigmoid(a * link + b)
        grad = x.T @ (mu - y)
        hess = (x * (mu * (1 - mu))[:, None]).T @ x + reg
        step = np.linalg.solve(hess, grad)
        a, b = a - float(step[0]), b - float(step[1])
        if np.abs(step).max() < 1e-9:
            break
    return a, b
