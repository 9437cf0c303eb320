"""Admin REST for KPIs: the workspace's and those created here, which queue optimises
which, and whether a queue's history can train a KPI's model yet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body

from opportune.api.auth import admin_router
from opportune.api.definitions import parse_definition, read_only
from opportune.api.errors import error, not_found
from opportune.api.inputs import CamelIn, now_ms
from opportune.core.kpis import ReadinessThresholds, history_stats, readiness
from opportune.engine.router import Router
from opportune.engine.rules import ReadOnlyDefinition, RuleBook
from opportune.store.audit import API_KEY, Actor
from opportune.store.routing_history import load_history
from opportune.workspace.engagement import KpiDoc, QueueKpiDoc, kpi_fits_queue


class QueueKpiIn(CamelIn):
    kpi: str | None


def _kpi_json(router: Router, name: str) -> dict[str, Any]:
    d = router.kpis[name]
    found = router.rules.get("kpi", name) if router.rules is not None else None
    return {
        **d.model_dump(mode="json", by_alias=True),
        "outcomeId": d.outcome_id,
        "direction": d.to_core().direction,
        "queues": _users(router, name),
        "source": found[1] if found else "workspace",
    }


def _users(router: Router, kpi: str) -> list[str]:
    return sorted(q for q, doc in router.docs.items() if doc.kpi == kpi)


def _rules(router: Router) -> RuleBook:
    if router.rules is None:  # a router built without the rules: read-only KPIs
        raise error(405, "read_only", "KPIs are fixed")
    return router.rules


def _known(router: Router, name: str) -> None:
    if name not in router.kpis:
        raise not_found(f"kpi {name!r}")


def save_kpi(router: Router, doc: KpiDoc, *, actor: Actor) -> dict[str, Any]:
    """Create or replace a database KPI (409 a workspace file's, 422 it no longer fits a
    queue using it), audited as ``actor``'s: the REST API's rule and the console's."""
    found = _rules(router).get("kpi", doc.name)
    if found is not None and found[1] == "workspace":
        raise read_only(ReadOnlyDefinition(f"kpi {doc.name!r} is defined in the workspace"))
    for qdoc in router.docs.values():
        problem = kpi_fits_queue(doc, qdoc) if qdoc.kpi == doc.name else None
        if problem:
            raise error(422, "invalid", problem, path="successCodes")
    try:
        _rules(router).put(doc, now_ms=now_ms(), actor=actor)
    except ReadOnlyDefinition as exc:
        raise read_only(exc) from None
    return _kpi_json(router, doc.name)


def delete_kpi(router: Router, name: str, *, actor: Actor) -> None:
    """Delete a database KPI no queue uses (404, 409 in use or a workspace file's)."""
    _known(router, name)
    users = _users(router, name)
    if users:
        raise error(
            409,
            "in_use",
            f"kpi {name!r} is the KPI of queue(s) {users}; "
            "give them another first (PUT /v1/queues/{name}/kpi)",
        )
    try:
        _rules(router).delete("kpi", name, now_ms=now_ms(), actor=actor)
    except ReadOnlyDefinition as exc:
        raise read_only(exc) from None


def set_queue_kpi(router: Router, name: str, kpi: str | None, *, actor: Actor) -> None:
    """The KPI queue ``name`` optimises (``None``: none), checked as the REST API does."""
    if name not in router.docs:
        raise not_found(f"queue {name!r}")
    if kpi is not None:
        if kpi not in router.kpis:
            raise error(422, "invalid", f"unknown kpi {kpi!r}", path="kpi")
        problem = kpi_fits_queue(router.kpis[kpi], router.docs[name])
        if problem:
            raise error(422, "invalid", problem, path="kpi")
    _rules(router).put(QueueKpiDoc(name=name, kpi=kpi), now_ms=now_ms(), actor=actor)


def _parse(body: Any, name: str | None = None) -> KpiDoc:
    doc = parse_definition("kpi", body, name)
    assert isinstance(doc, KpiDoc)
    return doc


def kpi_readiness(router: Router, name: str, queue: str) -> dict[str, Any]:
    kpi = router.kpis[name].to_core()
    with router.engine.connect() as conn:
        rows = load_history(conn, queue, kpi, now_ms=now_ms())
    thresholds = ReadinessThresholds()
    stats = history_stats([(r.ended_at, r.agent_id, r.label) for r in rows], thresholds)
    r = readiness(kpi, stats, thresholds)
    return {
        "kpi": name,
        "queue": queue,
        "ready": r.ready,
        "missing": list(r.missing),
        "status": "ready" if r.ready else "collecting data: " + "; ".join(r.missing),
        "history": {
            "days": round(stats.days, 2),
            "interactions": stats.interactions,
            "successes": stats.successes,
            "agentsWithHistory": stats.agents_with_history,
        },
    }


def kpis_router(*, router: Router, require_api_key: Callable[..., None]) -> APIRouter:
    api = admin_router(require_api_key, tags=["routing"])

    @api.get("/kpis")
    def kpis() -> dict[str, Any]:
        """The KPIs (workspace documents and those created here), each with the outcome id
        its attributions are posted with (outcome-tracked ones) and the queues using it."""
        return {"items": [_kpi_json(router, n) for n in sorted(router.kpis)]}

    @api.get("/kpis/{name}")
    def kpi(name: str) -> dict[str, Any]:
        _known(router, name)
        return _kpi_json(router, name)

    @api.post("/kpis", status_code=201)
    def create_kpi(body: Annotated[Any, Body()]) -> dict[str, Any]:
        """A custom KPI (organisation-wide): name, type, tracking, success codes."""
        doc = _parse(body)
        if doc.name in router.kpis:
            raise error(409, "already_exists", f"kpi {doc.name!r} exists; PUT it")
        return save_kpi(router, doc, actor=API_KEY)

    @api.put("/kpis/{name}")
    def put_kpi(name: str, body: Annotated[Any, Body()]) -> dict[str, Any]:
        return save_kpi(router, _parse(body, name), actor=API_KEY)

    @api.delete("/kpis/{name}")
    def remove_kpi(name: str) -> dict[str, Any]:
        delete_kpi(router, name, actor=API_KEY)
        return {"deleted": {"kind": "kpi", "name": name}}

    @api.put("/queues/{name}/kpi")
    def put_queue_kpi(name: str, body: QueueKpiIn) -> dict[str, Any]:
        """The KPI the queue's predictive routing optimises (null: none), replacing its
        document's. A model trained for another KPI is not used until retrained."""
        set_queue_kpi(router, name, body.kpi, actor=API_KEY)
        return {"queue": name, "kpi": router.docs[name].kpi}

    @api.get("/kpis/{name}/readiness")
    def readiness_of(name: str, queue: str) -> dict[str, Any]:
        """Whether the queue's history can train the KPI's model, and what is missing."""
        _known(router, name)
        if queue not in router.queues:
            raise not_found(f"queue {queue!r}")
        return kpi_readiness(router, name, queue)

    return api
