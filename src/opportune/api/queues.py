"""Admin REST for a routing queue's figures: service over the last hours, predictive
against standard routing (the comparison test), and the benefit a KPI model would bring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query

from opportune.api.auth import admin_router
from opportune.api.errors import error, not_found
from opportune.api.inputs import now_ms
from opportune.api.uplift import uplift_json
from opportune.core.conditions import parse_duration
from opportune.core.kpis import KPI
from opportune.core.routing import abandonment_rate, average_speed_of_answer, service_level
from opportune.core.valuation import compare, summarise
from opportune.engine.router import Router
from opportune.ml.routing.features import HistoryRow
from opportune.ml.routing.registry import LoadedRouting, RoutingRegistry
from opportune.ml.routing.training import assess_benefit
from opportune.store import interactions as store
from opportune.store.routing_history import load_history

DAY_MS = 86_400_000
# Interactions of each arm: KPI labels, waits and handle times.
Arms = dict[str, tuple[list[float], list[float], list[float]]]


def _known(router: Router, name: str) -> None:
    if name not in router.queues:
        raise not_found(f"queue {name!r}")


def _kpi(router: Router, name: str) -> KPI:
    _known(router, name)
    kpi = router.kpi_of(name)
    if kpi is None:
        raise error(409, "no_kpi", f"queue {name!r} has no KPI")
    return kpi


def _service(router: Router, name: str, hours: int) -> dict[str, Any]:
    with router.engine.connect() as conn:
        rows = store.since(conn, name, now_ms() - hours * 3_600_000)
    waits = [(r.assigned_at - r.arrived_at) / 1000 for r in rows if r.assigned_at]
    gave_up = [
        (r.ended_at - r.arrived_at) / 1000
        for r in rows
        if r.status == "abandoned" and not r.assigned_at and r.ended_at
    ]
    abandoned = len(gave_up)
    t = parse_duration(router.docs[name].service_level_within, []) / 1000
    return {
        "queue": name,
        "hours": hours,
        "arrived": len(rows),
        "answered": len(waits),
        "abandoned": abandoned,
        "waiting": sum(1 for r in rows if r.status == "waiting"),
        "serviceLevel": service_level(waits, gave_up, t) if rows else None,
        "answerWithinS": t,
        "abandonmentRate": abandonment_rate(len(waits), abandoned) if rows else None,
        "averageSpeedOfAnswerS": average_speed_of_answer(waits) if waits else None,
    }


def _arms(rows: list[HistoryRow]) -> Arms:
    arms: Arms = {}
    for r in rows:
        group = (
            "predictive"
            if r.arm == "predictive"
            else ("standard" if r.arm in ("standard", "control") else None)
        )
        if group is None:
            continue  # warm-up slices are not measured
        ys, ws, hs = arms.setdefault(group, ([], [], []))
        ys.append(r.label)
        ws.append(r.wait_s)
        hs.append(r.handle_s)
    return arms


def _comparison(router: Router, name: str, kpi: KPI, days: int) -> dict[str, Any]:
    with router.engine.connect() as conn:
        rows = load_history(conn, name, kpi, now_ms=now_ms(), since_ms=now_ms() - days * DAY_MS)
    arms = _arms(rows)
    out: dict[str, Any] = {
        "queue": name,
        "kpi": kpi.name,
        "days": days,
        "arms": {
            k: {"interactions": len(v[0]), "rate": sum(v[0]) / len(v[0])} for k, v in arms.items()
        },
    }
    if "predictive" in arms and "standard" in arms:
        c = compare(summarise(*arms["predictive"]), summarise(*arms["standard"]), binary=kpi.binary)
        out.update(uplift_json(c), waitCostS=c.wait_cost_s, handleCostS=c.handle_cost_s)
    else:
        out["note"] = "both arms need ended interactions"
    return out


def _model(registry: RoutingRegistry | None, name: str, kpi: KPI) -> LoadedRouting:
    loaded = registry.active_routing(name) if registry is not None else None
    if loaded is not None and loaded.card.get("kpi") != kpi.name:
        loaded = None  # trained for the queue's earlier KPI: says nothing of this one
    if loaded is None:
        raise error(
            409,
            "no_model",
            f"queue {name!r} has no KPI model yet: check "
            f"/v1/kpis/{kpi.name}/readiness?queue={name}, then run "
            f"`opportune train routing --queue {name}`",
        )
    return loaded


def _benefit(router: Router, name: str, kpi: KPI, loaded: LoadedRouting) -> dict[str, Any]:
    since = int(loaded.card.get("window", {}).get("toMs", 0)) + 1
    with router.engine.connect() as conn:
        fresh = [
            r
            for r in load_history(conn, name, kpi, now_ms=now_ms(), since_ms=since)
            if r.arm != "predictive"  # assess against the routing it would replace
        ]
    head = {"queue": name, "kpi": kpi.name, "model": loaded.version}
    if len(fresh) >= 200:
        found = assess_benefit(
            loaded.model, loaded.spec, fresh, router.agent_docs, direction=kpi.direction
        )
        return {**head, "assessedOn": "decisions logged since the model was trained", **found}
    return {
        **head,
        "assessedOn": "the newest history at training, held out from fitting",
        **loaded.card.get("benefit", {}),
    }


def queues_router(
    *,
    router: Router,
    require_api_key: Callable[..., None],
    registry: RoutingRegistry | None = None,
) -> APIRouter:
    api = admin_router(require_api_key, tags=["routing"])

    @api.get("/queues/{name}/service")
    def service(name: str, hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24) -> dict[str, Any]:
        """Service figures of a queue over the last hours: answered within T, abandoned."""
        _known(router, name)
        return _service(router, name, hours)

    @api.get("/queues/{name}/comparison")
    def comparison(name: str, days: Annotated[int, Query(ge=1, le=400)] = 30) -> dict[str, Any]:
        """Predictive against standard routing on this queue: KPI rate per arm, uplift with
        its 95% interval and p-value, and the cost in wait and handle time."""
        return _comparison(router, name, _kpi(router, name), days)

    @api.get("/queues/{name}/benefit")
    def benefit_assessment(name: str) -> dict[str, Any]:
        """What predictive routing would bring on this queue, estimated off-policy from its
        logged decisions by the active KPI model: on the decisions logged since the model
        was trained when there are enough (at least 200), else on the newest history the
        model was not fitted on (its training holdout)."""
        kpi = _kpi(router, name)
        return _benefit(router, name, kpi, _model(registry, name, kpi))

    return api
