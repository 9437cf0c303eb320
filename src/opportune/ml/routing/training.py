"""``opportune train routing``: a queue's KPI model from its stored history, its model card
with a benefit assessment, and the activation rule.

**Benefit assessment** — what predictive routing would have brought on the newest
``holdout_share`` of the queue's history (decisions the model did not learn from), against
the routing that was logged (standard routing, before predictive routing is switched on):

- the estimator is **doubly robust** per decision: the model's predicted KPI for the agent
  predictive routing would have chosen among the logged candidates (those eligible and
  free then), plus the importance-weighted residual of the logged choice where the two
  agree, minus the observed KPI (``core/valuation.benefit``); the direct method (model
  only) is reported beside it;
- the interval is a percentile bootstrap over decisions with the model held fixed (it
  leaves out the model's own estimation error);
- **assumptions**: the logged propensities are the ones routing used; where the logged
  policy was deterministic (standard routing), a different choice has no logged support and
  the estimate for it is the model's — so the model's calibration (checked: predicted
  against observed on the same decisions) carries it; one decision at a time (choosing
  another agent would not have changed who was free for the next customers); and
  customers, agents and outcomes as in the assessed period.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from opportune.core.kpis import DAY_MS, ReadinessThresholds, history_stats, readiness
from opportune.core.valuation import benefit
from opportune.ml.evaluation import log_loss, rmse
from opportune.ml.routing.features import HistoryRow, RoutingHistory, RoutingSpec
from opportune.ml.routing.model import RoutingModel
from opportune.ml.routing.registry import LoadedRouting, RoutingRegistry
from opportune.workspace.engagement import AgentDoc, KpiDoc, QueueDoc

HOLDOUT_SHARE = 0.2
LOSS_TOLERANCE = 0.01  # relative: a retrained model may be this much worse (window noise)


class RoutingTrainingError(ValueError):
    """The queue cannot have a KPI model (no KPI, unknown queue); the message says why."""


@dataclass(frozen=True)
class RoutingTrainResult:
    queue: str
    kpi: str
    trained: bool
    status: str  # what happened, for people
    version: str | None = None
    activated: bool = False
    card: Mapping[str, Any] | None = None


def predict_candidates(
    loaded: LoadedRouting | tuple[RoutingModel, RoutingSpec],
    row: HistoryRow,
    agents: Mapping[str, AgentDoc],
) -> np.ndarray:
    """The model's predicted KPI of ``row``'s customer with each of its candidates."""
    model, spec = (loaded.model, loaded.spec) if isinstance(loaded, LoadedRouting) else loaded
    return model.predict(
        spec.customer_row(row.features),
        row.candidates,
        spec.context_row(row.arrived_at, row.language),
        spec.pair_rows(row.language, row.candidates, agents),
    )


def assess_benefit(
    model: RoutingModel,
    spec: RoutingSpec,
    rows: Sequence[HistoryRow],
    agents: Mapping[str, AgentDoc],
    *,
    direction: str = "maximize",
    seed: int = 0,
    n_boot: int = 400,
) -> dict[str, Any]:
    """The benefit assessment of predictive routing over ``rows`` (see the module doc).

    Too few logged decisions give no estimate, and say so:

    >>> assess_benefit(RoutingModel(), RoutingSpec("q", "csat", (), ()), [], {})["note"]
    'fewer than 30 logged decisions with their candidates: no estimate'
    """
    usable = [r for r in rows if r.candidates and r.agent_id in r.candidates]
    if len(usable) < 30:
        return {
            "decisions": len(usable),
            "note": "fewer than 30 logged decisions with their candidates: no estimate",
        }
    rewards, mu, target, q_logged, q_target, chosen = [], [], [], [], [], []
    for r in usable:
        q = predict_candidates((model, spec), r, agents)
        best = int(np.argmax(q) if direction == "maximize" else np.argmin(q))
        logged = r.candidates.index(r.agent_id)
        rewards.append(r.label)
        mu.append(max(r.propensity, 1e-6))
        target.append(1.0 if best == logged else 0.0)
        q_logged.append(float(q[logged]))
        q_target.append(float(q[best]))
        chosen.append((r.candidates[best], r.agent_id))
    rng = np.random.default_rng(seed)
    dr = benefit(
        rewards, mu, target, [1.0] * len(usable), q_logged, q_target, q_logged,
        rng=rng, n_boot=n_boot,
    )  # fmt: skip
    dm_terms = np.asarray(q_target) - np.asarray(q_logged)
    boots = dm_terms[rng.integers(0, len(dm_terms), size=(n_boot, len(dm_terms)))].mean(axis=1)
    observed = float(np.mean(rewards))
    return {
        "decisions": len(usable),
        "estimator": "doubly robust against the logged routing (core/valuation.benefit)",
        "observed": observed,
        "predictedLogged": float(np.mean(q_logged)),
        "estimatedPredictive": observed + dr.value,
        "uplift": dr.value,
        "ciLow": dr.ci_low,
        "ciHigh": dr.ci_high,
        "relativeUplift": dr.value / observed if observed else None,
        "improves": bool(dr.ci_low > 0 if direction == "maximize" else dr.ci_high < 0),
        "directMethod": {
            "uplift": float(dm_terms.mean()),
            "ciLow": float(np.quantile(boots, 0.025)),
            "ciHigh": float(np.quantile(boots, 0.975)),
        },
        "agreement": float(np.mean(target)),
        "interval": "95% percentile bootstrap over decisions, the model held fixed",
        "assumptions": [
            "the logged propensities are those routing used",
            "where logged routing was deterministic, another choice is valued by the model "
            "(compare predictedLogged with observed for its calibration)",
            "one decision at a time: another choice would not change who was free later",
            "customers, agents and outcomes as in the assessed period",
        ],
    }


def _loss(model: RoutingModel, spec: RoutingSpec, rows: Sequence[HistoryRow], agents: Any) -> float:
    data = spec.training_set(rows, agents)
    pred = model.predict_rows(data)
    return log_loss(data.labels, pred) if model.binary else rmse(data.labels, pred)


def _activation(
    active: LoadedRouting | None,
    model: RoutingModel,
    new_loss: float,
    hold: Sequence[HistoryRow],
    agents: Mapping[str, AgentDoc],
) -> dict[str, Any]:
    """The activation check: the new model not worse than the active one (within
    ``LOSS_TOLERANCE``) on the newest decisions."""
    if active is None:
        return {"notWorse": True, "comparedWith": None}
    try:
        old_loss = _loss(active.model, active.spec, hold, agents)
    except ValueError as exc:  # the layout changed beyond what the old model reads
        old_loss, why = math.inf, f"the active model cannot read this history ({exc})"
    else:
        why = ""
    metric = "log loss" if model.binary else "RMSE"
    return {
        "notWorse": new_loss <= old_loss * (1 + LOSS_TOLERANCE),
        "comparedWith": active.version,
        "reason": why or f"{metric} {new_loss:.5f} against {old_loss:.5f} on the newest decisions",
    }


def train_routing(
    history: RoutingHistory,
    *,
    queue: str,
    queues: Mapping[str, QueueDoc],
    agents: Mapping[str, AgentDoc],
    kpis: Mapping[str, KpiDoc],
    registry: RoutingRegistry,
    now_ms: int | None = None,
    days: float | None = None,
    thresholds: ReadinessThresholds | None = None,
    force: bool = False,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _m: None,
) -> RoutingTrainResult:
    """Train, save and (by the activation rule) activate ``queue``'s KPI model on its
    labelled interactions in ``history``."""
    if queue not in queues:
        raise RoutingTrainingError(f"queue {queue!r} is not in the workspace")
    doc = queues[queue]
    if not doc.kpi or doc.kpi not in kpis:
        raise RoutingTrainingError(
            f"queue {queue!r} has no KPI" + (f" ({doc.kpi!r} is not defined)" if doc.kpi else "")
        )
    kpi = kpis[doc.kpi].to_core()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    since = 0 if days is None else now - int(days * DAY_MS)
    rows = history.rows(queue, kpi, now_ms=now, since_ms=since)
    t = thresholds or ReadinessThresholds()
    ready = readiness(kpi, history_stats([(r.ended_at, r.agent_id, r.label) for r in rows], t), t)
    if not ready.ready and not force:
        return RoutingTrainResult(
            queue, kpi.name, False, "collecting data: " + "; ".join(ready.missing)
        )
    if len(rows) < 50:
        return RoutingTrainResult(
            queue, kpi.name, False, f"{len(rows)} labelled interactions: too few to train on"
        )
    progress(f"{queue}: {len(rows)} labelled interactions; fitting the {kpi.name} model")
    spec = RoutingSpec.build(rows, queue=queue, kpi=kpi.name, agents=agents, language=doc.language)
    started = time.perf_counter()
    model = RoutingModel.fit(
        spec.training_set(rows, agents),
        binary=kpi.binary,
        agent_features=spec.agent_features(agents),
        holdout_share=HOLDOUT_SHARE,
        seed=seed,
    )
    fit_s = time.perf_counter() - started
    cut = int(len(rows) * (1 - HOLDOUT_SHARE))
    hold = rows[cut:]
    progress(f"{queue}: benefit assessment on the newest {len(hold)} decisions")
    assessment = assess_benefit(model, spec, hold, agents, direction=kpi.direction, seed=seed)
    new_loss = _loss(model, spec, hold, agents)
    activation = _activation(registry.active_routing(queue), model, new_loss, hold, agents)
    card = {
        "queue": queue,
        "kpi": kpi.name,
        "kpiType": kpi.type,
        "direction": kpi.direction,
        "trainedAtMs": now,
        "window": {"fromMs": rows[0].arrived_at, "toMs": rows[-1].arrived_at},
        "interactions": len(rows),
        "agents": len({r.agent_id for r in rows}),
        "readiness": {"ready": ready.ready, "missing": list(ready.missing), "forced": force},
        "features": {"customer": list(spec.customer), "agentSkills": list(spec.skills)},
        "fitSeconds": round(fit_s, 2),
        "model": model.card,
        "holdoutLoss": new_loss,
        "benefit": assessment,
        "activation": activation,
    }
    version = registry.save_routing(queue, model, spec, card)
    activated = bool(activation["notWorse"])
    if activated:
        registry.activate(queue, version, by="training", now_ms=now)
    status = f"trained {version}" + (
        ", active" if activated else f", not activated: {activation.get('reason')}"
    )
    return RoutingTrainResult(queue, kpi.name, True, status, version, activated, card)
