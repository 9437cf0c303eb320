"""The KPI model of predictive routing: how likely is *this* agent to achieve the queue's KPI
with *this* customer, for every candidate agent at once.

Trained per queue and KPI on interaction history: customer features, interaction features
(context), customer-agent pair features (the agent speaks the customer's language), agent
features and agent identity. Two candidates learn per-agent strengths of any shape, and
``agent_model="auto"`` (the default) serves the one with the lower held-out loss on the
newest rows:

- ``ridge``: a **base** LightGBM model (agent-blind apart from the agent and pair
  features) — what an agent of those skills does for this customer — and a **hierarchical
  agent model** on top, per agent a: logit p = base + β_a + s(x)·Γ_a + h(x, c)·H_a, with
  s standardised slopes on the strongest customer features and h *shape* terms (a one-hot
  per level of a feature with few values, per quartile of a continuous one, and the binary
  interaction features), fitted by penalised Newton with the base as a cross-fitted offset.
  The ridge penalty is a Gaussian prior centred on the base: partial pooling, an agent with
  little history stays near their group and moves only as far as their own data support.
  Penalties (intercept, slopes, shape) are chosen on the held-out slice.
- ``trees``: LightGBM with the agent id as a category, interaction constraints keeping its
  splits with the customer's features, categorical smoothing for sparse agents.

The older ``target_encoding`` (agent id plus a shrunk mean per agent) is kept for
comparison. Measured on the simulator (``bench/routing.py``), ``ridge`` wins in both kinds of
world; its shape terms take the specialist world's sharp strengths from 46% to 98% of the
oracle's uplift (seed 1, load 0.7), and cost nothing in the bilinear one (its shape penalty
is chosen at "none").

Binary KPIs are calibrated by Platt scaling on the latest ``holdout_share`` of history
(isotonic would flatten close scores into ties and lose the ranking among agents, which is
the model's whole use). Amounts (sales value, handle time) use squared error, same stages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from opportune.core.predictive import Posterior
from opportune.ml.evaluation import auc, brier, ece, log_loss, rmse

if TYPE_CHECKING:
    import lightgbm as lgb


def _lgb() -> Any:
    """LightGBM, imported when a trees model is trained or loaded: importing it loads
    scikit-learn and SciPy (~90 MB), which a server whose routing models are pooled
    ridge models (or that has none) never needs."""
    import lightgbm

    return lightgbm


AgentModel = Literal["auto", "ridge", "trees", "target_encoding"]
_GRID_INTERCEPT = (3.0, 10.0, 30.0, 100.0, 300.0)
_GRID_SLOPES = (10.0, 30.0, 100.0, 300.0, 1e4)
_GRID_SHAPE = (3.0, 10.0, 30.0, 100.0, 300.0, 1e4)  # 1e4: next to no shape terms
# Per-agent *shape* terms (partial pooling of strengths of any shape): a one-hot per level
# of a customer feature with few distinct values (an intent, a tier), a one-hot per
# quartile of a continuous one, and binary interaction features (the caller's language is
# not the queue's). At most this many customer features get them (the strongest first).
MAX_SHAPE_FEATURES = 6
MAX_LEVELS = 12
_QUARTILES = (0.25, 0.5, 0.75)
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


def _tree_params(binary: bool, num_threads: int, seed: int) -> dict[str, Any]:
    """LightGBM's parameters for the base model and the trees candidate."""
    return {
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
        self.slope_scale = np.zeros((2, 0))  # their training mean and sd (slopes per sd)
        # Per-agent shape terms: (customer column, "levels" | "bins", values or edges), and
        # the binary context columns; see MAX_SHAPE_FEATURES.
        self.shape: list[tuple[int, str, list[float]]] = []
        self.shape_context: list[int] = []
        self.support: dict[str, int] = {}  # training rows per agent
        self._blocks: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    # ---- persistence ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Everything the model needs to predict, as JSON (the trees as LightGBM's text)."""
        assert self.base is not None
        return {
            "format": 2,
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
            "slopeScale": self.slope_scale.tolist(),
            "shape": [[j, kind, list(v)] for j, kind, v in self.shape],
            "shapeContext": self.shape_context,
            "support": self.support,
            "card": self.card,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoutingModel:
        if data.get("format") not in (1, 2):
            raise ValueError(f"unknown routing model format {data.get('format')!r}")
        m = cls()
        m.binary = bool(data["binary"])
        m.agent_model = data["agentModel"]
        m.agent_features = {a: tuple(v) for a, v in data["agentFeatures"].items()}
        m.n_agent_features = int(data["nAgentFeatures"])
        m.n_pair = int(data["nPair"])
        m.base = _lgb().Booster(model_str=data["base"])
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
        # Format 1 (before shape terms): raw slopes, no shape.
        scale = data.get("slopeScale") or [[0.0] * len(m.slope_idx), [1.0] * len(m.slope_idx)]
        m.slope_scale = np.asarray(scale, dtype=float).reshape(2, len(m.slope_idx))
        m.shape = [
            (int(j), str(kind), [float(v) for v in vals]) for j, kind, vals in data.get("shape", [])
        ]
        m.shape_context = [int(j) for j in data.get("shapeContext", [])]
        m.support = {str(a): int(n) for a, n in data.get("support", {}).items()}
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
        agent_model: AgentModel = "auto",
        holdout_share: float = 0.2,
        num_threads: int = 1,
        rounds: int = 150,
        seed: int = 0,
        shape: bool = True,
    ) -> RoutingModel:
        """Fit on ``data``; the latest ``holdout_share`` of rows choose the penalties, fit
        the calibration and are what the model card reports on.

        ``agent_model="auto"`` fits both candidates that learn per-agent strengths of any
        shape — ``ridge`` (the hierarchical model with partial pooling) and ``trees``
        (LightGBM with the agent id as a category, constrained to interact with the
        customer) — and keeps the one with the lower held-out loss (time-ordered: the
        newest rows); the card's ``choice`` shows both.

        ``num_threads`` is capped at 2; the default is 1 because on a 2-core machine with the
        other core busy two OpenMP threads were measured six times slower (8.3 s against
        1.3 s for 18,000 rows), and a single thread is fast at this size. ``shape=False``
        leaves the ridge model's shape terms out (intercept and slopes only: the model
        before them, kept for comparison)."""
        if agent_model == "auto":
            fitted = [
                cls.fit(
                    data,
                    binary=binary,
                    agent_features=agent_features,
                    agent_model=kind,
                    holdout_share=holdout_share,
                    num_threads=num_threads,
                    rounds=rounds,
                    seed=seed,
                    shape=shape,
                )
                for kind in ("ridge", "trees")
            ]
            return cls._better(fitted, binary, holdout_share)
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
        params = _tree_params(binary, num_threads, seed)
        agents = sorted({str(a) for a in data.agents} | set(m.agent_features))
        m.index = {a: k for k, a in enumerate(agents)}
        for a in train.agents:
            m.support[str(a)] = m.support.get(str(a), 0) + 1
        shrinkage: np.ndarray | None = None
        if agent_model == "ridge":
            shrinkage = m._fit_ridge(train, hold, params, rounds, seed, shape)
        elif agent_model == "trees":
            m._fit_trees(train, params, rounds)
        else:
            m._fit_target_encoding(train, params, rounds)
        if agent_model != "ridge":
            # No per-agent posterior from trees: the sd a ridge prior of strength 10 would
            # leave after each agent's rows (for Thompson sampling; wide with little history).
            info = np.array([m.support.get(a, 0) for a in agents], dtype=float)
            info *= (
                m.mean * (1 - m.mean) if binary else 1.0 / max(float(np.var(train.labels)), 1e-9)
            )
            m.theta_sd = 1 / np.sqrt(10.0 + info)
        raw = m._raw(hold)
        if binary:
            m.platt = _platt(raw, hold.labels)
        m.card.update(m._model_card(train, hold, shrinkage))
        return m

    @staticmethod
    def _better(fitted: list[RoutingModel], binary: bool, holdout_share: float) -> RoutingModel:
        """The candidate with the lower held-out loss, its card saying why."""
        metric = "log_loss" if binary else "rmse"
        losses = {m.agent_model: float(m.card["holdout"][metric]) for m in fitted}
        best = min(fitted, key=lambda m: losses[m.agent_model])
        best.card["choice"] = {
            "chosen": best.agent_model,
            f"holdout_{metric}": losses,
            "by": f"held-out {metric.replace('_', ' ')} on the newest "
            f"{holdout_share:.0%} of history (time-ordered)",
        }
        return best

    def _fit_ridge(
        self,
        train: TrainingSet,
        hold: TrainingSet,
        params: dict[str, Any],
        rounds: int,
        seed: int,
        shape: bool,
    ) -> np.ndarray:
        """The pooled model: the base trees, then the per-agent terms with penalties chosen
        on the held-out rows; each agent's shrinkage."""
        m = self
        m.base = _lgb().train(params, _lgb().Dataset(m._base_x(train), train.labels), rounds)
        m._choose_terms(train, shape)
        offset = m._cross_fit(train, params, rounds, seed)
        hold_offset = m._raw_base(hold)
        best = None
        groups, hold_codes = m._group(train), m._codes(hold)
        design, hold_design = m._design(train), m._design(hold)
        theta = None
        # Intercept and slopes first (shape terms held near zero), then the shape
        # terms' own penalty: a strength of a smooth kind keeps its slopes, a sharp
        # one gets its shape, without a search over every combination.
        grid = [(li, ls, 1e4) for li in _GRID_INTERCEPT for ls in _GRID_SLOPES]
        for stage in (grid, None):
            if stage is None:
                assert best is not None
                if not shape:
                    break
                stage = [(best[1], best[2], lh) for lh in _GRID_SHAPE]
            for penalties in stage:
                theta, _, _ = m._fit_agents(train, design, groups, offset, penalties, theta)
                link = hold_offset + m._agent_term(hold_design, theta, hold_codes)
                loss = m._loss(hold, link)
                if best is None or loss < best[0]:
                    best = (loss, *penalties)
        assert best is not None
        _, li, ls, lh = best
        m.theta, m.theta_sd, shrinkage = m._fit_agents(train, design, groups, offset, (li, ls, lh))
        m.prior_sd = 1 / math.sqrt(li)
        m.card["penalty"] = {"intercept": li, "slopes": ls, "shape": lh}
        return shrinkage

    def _choose_terms(self, train: TrainingSet, shape: bool) -> None:
        """The per-agent terms: slopes on the customer features the base uses most
        (standardised, so one penalty means the same for every feature and scale), shape
        terms (levels or quartiles) on the strongest of them, and binary context columns."""
        assert self.base is not None
        d = train.customer.shape[1]
        gain = self.base.feature_importance("gain")[:d]
        by_gain = np.argsort(-gain, kind="stable")
        self.slope_idx = np.sort(by_gain[:MAX_SLOPE_FEATURES]) if d else np.zeros(0, dtype=int)
        cols = train.customer[:, self.slope_idx]
        # By hand rather than nanmean/nanstd: a feature missing in every row (a journey
        # feature nobody had yet) must give mean 0, sd 1, not a warning.
        seen = ~np.isnan(cols)
        n = np.maximum(seen.sum(axis=0), 1)
        mean = np.where(seen, cols, 0.0).sum(axis=0) / n
        sd = np.sqrt(np.where(seen, (cols - mean) ** 2, 0.0).sum(axis=0) / n)
        self.slope_scale = np.vstack([mean, np.where(sd > 1e-9, sd, 1.0)])
        self.shape, self.shape_context = [], []
        if not shape:
            return
        for j in by_gain[:MAX_SHAPE_FEATURES]:
            v = train.customer[:, j]
            v = v[~np.isnan(v)]
            levels = np.unique(v)
            if len(levels) < 2:
                continue
            if len(levels) <= MAX_LEVELS:
                self.shape.append((int(j), "levels", [float(x) for x in levels]))
            else:
                edges = np.unique(np.quantile(v, _QUARTILES))
                self.shape.append((int(j), "bins", [float(x) for x in edges]))
        ctx = train.context.reshape(len(train), -1)
        self.shape_context = [
            k
            for k in range(ctx.shape[1])
            if set(np.unique(ctx[:, k][~np.isnan(ctx[:, k])]).tolist()) == {0.0, 1.0}
        ]

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
        ids = np.array([self.index.get(str(a), -1) for a in d.agents], dtype=float)
        if self.agent_model == "target_encoding":
            te = np.array([self.te.get(str(a), self.te_default) for a in d.agents])
            cols += [te[:, None], ids[:, None]]
        elif self.agent_model == "trees":
            cols += [np.where(ids >= 0, ids, np.nan)[:, None]]
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
            rows = _lgb().Dataset(x[fit_rows], train.labels[fit_rows])
            booster = _lgb().train(params, rows, rounds)
            out[pred_rows] = booster.predict(x[pred_rows], raw_score=True)
        return out

    def _design(self, d: TrainingSet) -> np.ndarray:
        return self._design_rows(d.customer, d.context.reshape(len(d), -1))

    def _design_rows(self, customer: np.ndarray, context: np.ndarray) -> np.ndarray:
        """Per-agent terms of each row: an intercept, the standardised slopes, the shape
        one-hots and the binary context columns (a missing value contributes nothing)."""
        n = len(customer)
        mean, sd = self.slope_scale
        cols = [np.ones((n, 1)), np.nan_to_num((customer[:, self.slope_idx] - mean) / sd, nan=0.0)]
        for j, kind, vals in self.shape:
            v = customer[:, j]
            if kind == "levels":
                cols.append((v[:, None] == np.asarray(vals)[None, :]).astype(float))
            else:
                b = np.searchsorted(np.asarray(vals), v, side="right")
                hot = (b[:, None] == np.arange(len(vals) + 1)[None, :]) & ~np.isnan(v)[:, None]
                cols.append(hot.astype(float))
        if self.shape_context:
            cols.append(np.nan_to_num(context[:, self.shape_context], nan=0.0))
        return np.hstack(cols)

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
        design: np.ndarray,
        groups: tuple[np.ndarray, ...],
        offset: np.ndarray,
        penalties: tuple[float, float, float],
        start: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per agent, the penalised (Gaussian-prior) fit of the agent's terms with the base
        as offset — partial pooling: an agent's effects are pulled to the base (what an
        agent of their skills does) by how little history they have. Also each
        intercept's posterior sd and shrinkage (posterior over prior variance: 1 is all
        prior, the agent's own rows moved nothing). ``penalties``: of the intercept, the
        slopes and the shape terms; ``start``: a warm start."""
        order, ks, counts, starts, group = groups
        x, y, off = design[order], train.labels[order], offset[order]
        p = x.shape[1]
        lam_intercept, lam_slopes, lam_shape = penalties
        n_slopes = len(self.slope_idx)
        diag = np.array(
            [lam_intercept] + [lam_slopes] * n_slopes + [lam_shape] * (p - 1 - n_slopes)
        )
        penalty = np.diag(diag)
        ends = starts + counts
        t = np.zeros((len(ks), p)) if start is None else start[ks].copy()

        def hessian(w: np.ndarray) -> np.ndarray:
            return (
                np.stack(
                    [x[s:e].T @ (x[s:e] * w[s:e, None]) for s, e in zip(starts, ends, strict=True)]
                )
                + penalty
            )

        if self.binary:
            for _ in range(12):
                mu = _sigmoid(off + np.einsum("ij,ij->i", x, t[group]))
                grad = np.add.reduceat(x * (mu - y)[:, None], starts) + t * diag
                hess = hessian(mu * (1 - mu))
                step = np.linalg.solve(hess, grad[..., None])[..., 0]
                t -= step
                if np.abs(step).max() < 1e-5:
                    break
            mu = _sigmoid(off + np.einsum("ij,ij->i", x, t[group]))
            hess = hessian(mu * (1 - mu))
            var = np.ones(len(ks))
        else:
            # Gaussian: the same penalties mean prior sds in units of the residual sd.
            hess = hessian(np.ones(len(y)))
            rhs = np.add.reduceat(x * (y - off)[:, None], starts)
            t = np.linalg.solve(hess, rhs[..., None])[..., 0]
            resid = y - off - np.einsum("ij,ij->i", x, t[group])
            var = np.add.reduceat(resid**2, starts) / np.maximum(counts - p, 1)
        inv00 = np.linalg.inv(hess)[:, 0, 0]
        theta = np.zeros((len(self.index), p))
        sd = np.full(len(self.index), 1 / math.sqrt(lam_intercept))
        shrink = np.ones(len(self.index))
        theta[ks] = t
        sd[ks] = np.sqrt(var * inv00)
        shrink[ks] = lam_intercept * inv00
        return theta, sd, shrink

    def _agent_term(self, design: np.ndarray, theta: np.ndarray, codes: np.ndarray) -> np.ndarray:
        t = np.where(codes[:, None] >= 0, theta[np.maximum(codes, 0)], 0.0)
        return np.asarray(np.einsum("ij,ij->i", design, t), dtype=float)

    def _loss(self, d: TrainingSet, link: np.ndarray) -> float:
        if self.binary:
            return log_loss(d.labels, _sigmoid(link))
        return rmse(d.labels, link)

    def _fit_trees(self, train: TrainingSet, params: dict[str, Any], rounds: int) -> None:
        """LightGBM with the agent id as a category beside the customer, interaction and
        pair features; interaction constraints keep the agent id's splits with customer
        features (who is good with whom) and apart from the agent features (the skill
        level is the other branch's), and categorical smoothing keeps agents with few
        rows near their branch's mean."""
        x = self._base_x(train)
        n_shared = x.shape[1] - 1 - self.n_agent_features
        shared = list(range(n_shared))
        skills = list(range(n_shared, n_shared + self.n_agent_features))
        agent = x.shape[1] - 1
        tree_params = {
            **params,
            "num_leaves": 31,
            "min_data_in_leaf": 40,
            "cat_smooth": 20.0,
            "cat_l2": 10.0,
            "min_data_per_group": 50,
            "max_cat_threshold": 64,
            "interaction_constraints": [[*shared, agent], shared + skills],
        }
        ds = _lgb().Dataset(x, train.labels, categorical_feature=[agent])
        self.base = _lgb().train(tree_params, ds, 2 * rounds)

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
        ds = _lgb().Dataset(x, y, categorical_feature=cat)
        smooth = {**params, "cat_smooth": 20.0, "min_data_per_group": 50}
        self.base = _lgb().train(smooth, ds, rounds)

    # ---- prediction -----------------------------------------------------------------------
    def _raw(self, d: TrainingSet) -> np.ndarray:
        link = self._raw_base(d)
        if self.agent_model == "ridge":
            link = link + self._agent_term(self._design(d), self.theta, self._codes(d))
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
            terms = self._design_rows(c[None, :], ctx.reshape(1, -1))[0]
            link = link + theta @ terms
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

    def _model_card(
        self, train: TrainingSet, hold: TrainingSet, shrinkage: np.ndarray | None
    ) -> dict[str, Any]:
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
        effects_all = list(self.agent_effects(hold.take(np.arange(min(len(hold), 500)))).values())
        effects = np.array(effects_all)
        card["agent_effects"] = {
            "sd": float(effects.std()),
            "p10": float(np.quantile(effects, 0.1)),
            "p90": float(np.quantile(effects, 0.9)),
        }
        named = dict(zip(self.index, effects_all, strict=True))
        card["per_agent"] = [
            {
                "agent": a,
                "rows": self.support.get(a, 0),
                # the share of the agent's own estimate pulled to the group (ridge only)
                "shrinkage": None if shrinkage is None else round(float(shrinkage[k]), 4),
                "effect": round(named[a], 5),
            }
            for a, k in sorted(self.index.items(), key=lambda kv: -self.support.get(kv[0], 0))
        ]
        if self.agent_model == "ridge":
            card["terms"] = {
                "slopes": self.slope_idx.tolist(),
                "shape": [[j, kind, len(v)] for j, kind, v in self.shape],
                "context": self.shape_context,
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
