"""Admin REST for routing: agents' presence, interactions (arrive, end with a wrap-up code,
abandon), service figures, outcome attributions, KPI readiness, the comparison test and the
benefit assessment."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from sqlalchemy import select

from opportune.api.definitions import _read_only, parse_definition
from opportune.core.conditions import parse_duration
from opportune.core.kpis import ReadinessThresholds, history_stats, readiness
from opportune.core.routing import abandonment_rate, average_speed_of_answer, service_level
from opportune.core.valuation import compare, summarise
from opportune.engine.router import Assigned, Router, RoutingError
from opportune.engine.rules import ReadOnlyDefinition, RuleBook
from opportune.ml.routing.features import decode_features
from opportune.ml.routing.registry import RoutingRegistry
from opportune.ml.routing.training import assess_benefit
from opportune.store.routing_history import load_history
from opportune.store.schema import (
    attribution_touchpoints,
    interactions,
    outcome_attributions,
)
from opportune.workspace.engagement import QueueKpiDoc, kpi_fits_queue

DAY_MS = 86_400_000
_ID = r"^[A-Za-z0-9_.:-]{1,64}$"
_FEATURE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class InteractionIn(_In):
    id: str = Field(pattern=_ID)
    queue: str
    medium: str = "chat"
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}$")
    priority: int = Field(default=0, ge=-100, le=100)
    customer_id: str | None = Field(default=None, max_length=128)
    visitor_id: str | None = Field(default=None, max_length=64)
    # Numbers the caller knows of the customer (CRM fields, value, tenure), by name; a
    # list is accepted too (named x0, x1, …).
    features: list[float] | dict[str, float] = Field(default_factory=list, max_length=200)

    @field_validator("features")
    @classmethod
    def _names(cls, v: list[float] | dict[str, float]) -> list[float] | dict[str, float]:
        for k, x in v.items() if isinstance(v, dict) else enumerate(v):
            if isinstance(k, str) and not _FEATURE.match(k):
                raise ValueError(f"feature name {k!r}: letters, digits, _ . - (1-64)")
            if not math.isfinite(x):
                raise ValueError(f"feature {k!r} is not a finite number")
        return v


class QueueKpiIn(_In):
    kpi: str | None


class EndIn(_In):
    wrap_up_code: str | None = Field(default=None, max_length=64)


class PresenceIn(_In):
    presence: str


class TouchpointIn(_In):
    conversation_id: str = Field(min_length=1, max_length=64)
    agent_id: str = Field(min_length=1, max_length=64)
    media_type: str = "chat"
    value_share: float = Field(default=1.0, ge=0, le=1)
    date: datetime | int


class AttributionIn(_In):
    # The record's own id (idempotency); when absent, derived from what the record says.
    id: str | None = Field(default=None, min_length=1, max_length=128)
    outcome_id: str = Field(min_length=1, max_length=128)  # the KPI's (GET /v1/kpis)
    customer_id: str | None = Field(default=None, max_length=128)
    external_contact_id: str | None = Field(default=None, max_length=128)
    associated_value: float | None = Field(default=None, ge=0)
    created_date: datetime | int
    touchpoints: list[TouchpointIn] = Field(min_length=1, max_length=50)


class AttributionsIn(_In):
    records: list[AttributionIn] = Field(min_length=1, max_length=1000)
    failure_threshold: float = Field(default=0.05, ge=0, le=1)


def _ms(value: datetime | int) -> int:
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


def _err(exc: RoutingError) -> HTTPException:
    detail: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.path:
        detail["path"] = exc.path
    return HTTPException(exc.status, detail=detail)


def _assigned(a: list[Assigned]) -> list[dict[str, Any]]:
    return [
        {
            "interactionId": x.interaction_id,
            "agentId": x.agent_id,
            "method": x.method,
            "arm": x.arm,
            "propensity": x.propensity,
            "why": x.why,
        }
        for x in a
    ]


JourneyFn = Callable[[str, int], Awaitable[dict[str, float]]]


def routing_router(
    *,
    router: Router,
    require_api_key: Callable[..., None],
    journey: JourneyFn | None = None,
    registry: RoutingRegistry | None = None,
) -> APIRouter:
    """``journey(visitor_id, now_ms)``: the visitor's segments and scores as features."""
    api = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["routing"])

    def now() -> int:
        return int(time.time() * 1000)

    @api.get("/agents")
    def agents() -> dict[str, Any]:
        with router.engine.connect() as conn:
            live = router.agents(conn)
        return {
            "items": [
                {
                    "id": a.id,
                    "displayName": router.agent_docs[a.id].display_name,
                    "presence": a.presence,
                    "skills": dict(a.skills),
                    "languages": sorted(a.languages),
                    "capacity": dict(a.capacity),
                    "load": dict(a.load),
                    "idleSince": a.idle_since_ms or None,
                }
                for a in live
            ]
        }

    @api.put("/agents/{agent_id}/presence")
    def presence(agent_id: str, body: PresenceIn) -> dict[str, Any]:
        try:
            made = router.presence(agent_id, body.presence, now())
        except RoutingError as exc:
            raise _err(exc) from None
        return {"agentId": agent_id, "presence": body.presence, "assigned": _assigned(made)}

    @api.post("/interactions", status_code=201)
    async def arrive(body: InteractionIn) -> dict[str, Any]:
        at = now()
        data = body.model_dump()
        if body.visitor_id and journey is not None:
            data["journey"] = await journey(body.visitor_id, at)
        try:
            made = await asyncio.to_thread(router.arrive, data, at)
        except RoutingError as exc:
            raise _err(exc) from None
        return {"interaction": interaction(body.id), "assigned": _assigned(made)}

    @api.get("/interactions/{interaction_id}")
    def interaction(interaction_id: str) -> dict[str, Any]:
        with router.engine.connect() as conn:
            r = conn.execute(
                select(interactions).where(interactions.c.id == interaction_id)
            ).first()
        if r is None:
            raise HTTPException(
                404, detail={"code": "not_found", "message": f"interaction {interaction_id!r}"}
            )
        return {
            "id": r.id,
            "queue": r.queue,
            "medium": r.medium,
            "status": r.status,
            "arrivedAt": r.arrived_at,
            "assignedAt": r.assigned_at,
            "agentId": r.agent_id,
            "endedAt": r.ended_at,
            "wrapUpCode": r.wrap_up_code,
            "arm": r.arm,
            "method": r.method,
            "propensity": r.propensity,
            "scores": json.loads(r.scores) if r.scores else [],
            "candidates": json.loads(r.candidates) if r.candidates else [],
            "heldSince": r.held_since,
            "features": decode_features(r.features),
            "why": r.why,
        }

    @api.post("/interactions/{interaction_id}/end")
    def end(interaction_id: str, body: EndIn) -> dict[str, Any]:
        try:
            made = router.end(interaction_id, body.wrap_up_code, now())
        except RoutingError as exc:
            raise _err(exc) from None
        return {"interaction": interaction(interaction_id), "assigned": _assigned(made)}

    @api.post("/interactions/{interaction_id}/abandon")
    def abandon(interaction_id: str) -> dict[str, Any]:
        try:
            router.abandon(interaction_id, now())
        except RoutingError as exc:
            raise _err(exc) from None
        return {"interaction": interaction(interaction_id)}

    @api.get("/queues/{name}/service")
    def service(name: str, hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24) -> dict[str, Any]:
        """Service figures of a queue over the last hours: answered within T, abandoned."""
        if name not in router.queues:
            raise HTTPException(404, detail={"code": "not_found", "message": f"queue {name!r}"})
        since = now() - hours * 3_600_000
        with router.engine.connect() as conn:
            rows = conn.execute(
                select(
                    interactions.c.arrived_at,
                    interactions.c.assigned_at,
                    interactions.c.ended_at,
                    interactions.c.status,
                ).where(interactions.c.queue == name, interactions.c.arrived_at >= since)
            ).all()
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

    @api.post("/outcome-attributions")
    def attributions(body: AttributionsIn) -> dict[str, Any]:
        """Outcomes reported from outside, credited to the interactions and agents that led
        to them. Each record names the KPI's outcome id; idempotent by record id;
        refused whole past the failure threshold."""
        received = now()
        accepted: list[tuple[str, AttributionIn]] = []
        duplicates: list[str] = []
        unmatched: list[dict[str, Any]] = []
        known = {d.outcome_id: d.name for d in router.kpis.values() if d.outcome_id is not None}
        ids = [rec.id or record_id(rec) for rec in body.records]
        with router.engine.begin() as conn:
            seen = {
                r[0]
                for r in conn.execute(
                    select(outcome_attributions.c.id).where(outcome_attributions.c.id.in_(ids))
                )
            }
            batch_ids: set[str] = set()
            for i, (rid, rec) in enumerate(zip(ids, body.records, strict=True)):
                if rid in seen or rid in batch_ids:
                    duplicates.append(rid)
                    continue
                problem = _check(conn, rec, known)
                if problem:
                    unmatched.append(
                        {"index": i, "id": rid, "outcomeId": rec.outcome_id, "reason": problem}
                    )
                    continue
                batch_ids.add(rid)
                accepted.append((rid, rec))
            failed = len(unmatched) / len(body.records)
            if failed > body.failure_threshold:
                raise HTTPException(
                    422,
                    detail={
                        "code": "too_many_failures",
                        "message": f"{len(unmatched)} of {len(body.records)} records could not "
                        f"be matched ({failed:.0%} > {body.failure_threshold:.0%}): nothing was "
                        "stored",
                        "unmatched": unmatched,
                    },
                )
            for rid, rec in accepted:
                conn.execute(
                    outcome_attributions.insert().values(
                        id=rid,
                        outcome_id=rec.outcome_id,
                        customer_id=rec.customer_id,
                        external_contact_id=rec.external_contact_id,
                        value=rec.associated_value,
                        created_at=_ms(rec.created_date),
                        received_at=received,
                    )
                )
                for t in rec.touchpoints:
                    conn.execute(
                        attribution_touchpoints.insert().values(
                            attribution_id=rid,
                            conversation_id=t.conversation_id,
                            agent_id=t.agent_id,
                            medium=t.media_type,
                            value_share=t.value_share,
                            at=_ms(t.date),
                        )
                    )
        return {
            "accepted": len(accepted),
            "ids": [rid for rid, _ in accepted],
            "duplicates": duplicates,
            "unmatched": unmatched,
        }

    def kpi_json(name: str) -> dict[str, Any]:
        d = router.kpis[name]
        found = router.rules.get("kpi", name) if router.rules is not None else None
        return {
            **d.model_dump(mode="json", by_alias=True),
            "outcomeId": d.outcome_id,
            "direction": d.to_core().direction,
            "queues": sorted(q for q, doc in router.docs.items() if doc.kpi == name),
            "source": found[1] if found else "workspace",
        }

    def rules() -> RuleBook:
        if router.rules is None:  # a router built without the rules: read-only KPIs
            raise HTTPException(405, detail={"code": "read_only", "message": "KPIs are fixed"})
        return router.rules

    def not_found(what: str, name: str) -> HTTPException:
        return HTTPException(404, detail={"code": "not_found", "message": f"{what} {name!r}"})

    @api.get("/kpis")
    def kpis() -> dict[str, Any]:
        """The KPIs (workspace documents and those created here), each with the outcome id
        its attributions are posted with (outcome-tracked ones) and the queues using it."""
        return {"items": [kpi_json(n) for n in sorted(router.kpis)]}

    @api.get("/kpis/{name}")
    def kpi(name: str) -> dict[str, Any]:
        if name not in router.kpis:
            raise not_found("kpi", name)
        return kpi_json(name)

    def save_kpi(doc: Any) -> dict[str, Any]:
        found = rules().get("kpi", doc.name)
        if found is not None and found[1] == "workspace":
            raise _read_only(ReadOnlyDefinition(f"kpi {doc.name!r} is defined in the workspace"))
        for qdoc in router.docs.values():
            problem = kpi_fits_queue(doc, qdoc) if qdoc.kpi == doc.name else None
            if problem:
                raise HTTPException(
                    422, detail={"code": "invalid", "path": "successCodes", "message": problem}
                )
        try:
            rules().put(doc, now_ms=now())
        except ReadOnlyDefinition as exc:
            raise _read_only(exc) from None
        return kpi_json(doc.name)

    @api.post("/kpis", status_code=201)
    def create_kpi(body: Annotated[Any, Body()]) -> dict[str, Any]:
        """A custom KPI (organisation-wide): name, type, tracking, success codes."""
        doc = parse_definition("kpi", body)
        if doc.name in router.kpis:
            raise HTTPException(
                409,
                detail={"code": "already_exists", "message": f"kpi {doc.name!r} exists; PUT it"},
            )
        return save_kpi(doc)

    @api.put("/kpis/{name}")
    def put_kpi(name: str, body: Annotated[Any, Body()]) -> dict[str, Any]:
        return save_kpi(parse_definition("kpi", body, name))

    @api.delete("/kpis/{name}")
    def delete_kpi(name: str) -> dict[str, Any]:
        if name not in router.kpis:
            raise not_found("kpi", name)
        users = sorted(q for q, doc in router.docs.items() if doc.kpi == name)
        if users:
            raise HTTPException(
                409,
                detail={
                    "code": "in_use",
                    "message": f"kpi {name!r} is the KPI of queue(s) {users}; "
                    "give them another first (PUT /v1/queues/{name}/kpi)",
                },
            )
        try:
            rules().delete("kpi", name, now_ms=now())
        except ReadOnlyDefinition as exc:
            raise _read_only(exc) from None
        return {"deleted": {"kind": "kpi", "name": name}}

    @api.put("/queues/{name}/kpi")
    def set_queue_kpi(name: str, body: QueueKpiIn) -> dict[str, Any]:
        """The KPI the queue's predictive routing optimises (null: none), replacing its
        document's. A model trained for another KPI is not used until retrained."""
        if name not in router.docs:
            raise not_found("queue", name)
        if body.kpi is not None:
            if body.kpi not in router.kpis:
                raise HTTPException(
                    422,
                    detail={
                        "code": "invalid",
                        "path": "kpi",
                        "message": f"unknown kpi {body.kpi!r}",
                    },
                )
            problem = kpi_fits_queue(router.kpis[body.kpi], router.docs[name])
            if problem:
                raise HTTPException(
                    422, detail={"code": "invalid", "path": "kpi", "message": problem}
                )
        rules().put(QueueKpiDoc(name=name, kpi=body.kpi), now_ms=now())
        return {"queue": name, "kpi": router.docs[name].kpi}

    @api.get("/kpis/{name}/readiness")
    def kpi_readiness(name: str, queue: str) -> dict[str, Any]:
        """Whether the queue's history can train the KPI's model, and what is missing."""
        if name not in router.kpis:
            raise HTTPException(404, detail={"code": "not_found", "message": f"kpi {name!r}"})
        if queue not in router.queues:
            raise HTTPException(404, detail={"code": "not_found", "message": f"queue {queue!r}"})
        kpi = router.kpis[name].to_core()
        with router.engine.connect() as conn:
            rows = load_history(conn, queue, kpi, now_ms=now())
        stats = history_stats([(r.ended_at, r.agent_id, r.label) for r in rows], _thresholds())
        r = readiness(kpi, stats, _thresholds())
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

    @api.get("/queues/{name}/comparison")
    def comparison(name: str, days: Annotated[int, Query(ge=1, le=400)] = 30) -> dict[str, Any]:
        """Predictive against standard routing on this queue: KPI rate per arm, uplift with
        its 95% interval and p-value, and the cost in wait and handle time."""
        if name not in router.queues:
            raise HTTPException(404, detail={"code": "not_found", "message": f"queue {name!r}"})
        kpi = router.kpi_of(name)
        if kpi is None:
            raise HTTPException(
                409, detail={"code": "no_kpi", "message": f"queue {name!r} has no KPI"}
            )
        with router.engine.connect() as conn:
            rows = load_history(conn, name, kpi, now_ms=now(), since_ms=now() - days * DAY_MS)
        arms: dict[str, tuple[list[float], list[float], list[float]]] = {}
        for arm, y, wait, handle in ((r.arm, r.label, r.wait_s, r.handle_s) for r in rows):
            group = (
                "predictive"
                if arm == "predictive"
                else ("standard" if arm in ("standard", "control") else None)
            )
            if group is None:
                continue  # warm-up slices are not measured
            ys, ws, hs = arms.setdefault(group, ([], [], []))
            ys.append(y)
            ws.append(wait)
            hs.append(handle)
        out: dict[str, Any] = {
            "queue": name,
            "kpi": kpi.name,
            "days": days,
            "arms": {
                k: {"interactions": len(v[0]), "rate": sum(v[0]) / len(v[0])}
                for k, v in arms.items()
            },
        }
        if "predictive" in arms and "standard" in arms:
            p, s = arms["predictive"], arms["standard"]
            c = compare(summarise(*p), summarise(*s), binary=kpi.binary)
            out.update(
                uplift=c.uplift,
                relativeUplift=None if math.isnan(c.relative_uplift) else c.relative_uplift,
                ciLow=c.ci_low,
                ciHigh=c.ci_high,
                pValue=c.p_value,
                method=c.ci_method,
                waitCostS=c.wait_cost_s,
                handleCostS=c.handle_cost_s,
            )
        else:
            out["note"] = "both arms need ended interactions"
        return out

    @api.get("/queues/{name}/benefit")
    def benefit_assessment(name: str) -> dict[str, Any]:
        """What predictive routing would bring on this queue, estimated off-policy from its
        logged decisions by the active KPI model: on the decisions logged since the model
        was trained when there are enough (at least 200), else on the newest history the
        model was not fitted on (its training holdout)."""
        if name not in router.queues:
            raise HTTPException(404, detail={"code": "not_found", "message": f"queue {name!r}"})
        kpi = router.kpi_of(name)
        if kpi is None:
            raise HTTPException(
                409, detail={"code": "no_kpi", "message": f"queue {name!r} has no KPI"}
            )
        loaded = registry.active_routing(name) if registry is not None else None
        if loaded is not None and loaded.card.get("kpi") != kpi.name:
            loaded = None  # trained for the queue's earlier KPI: says nothing of this one
        if loaded is None:
            raise HTTPException(
                409,
                detail={
                    "code": "no_model",
                    "message": f"queue {name!r} has no KPI model yet: check "
                    f"/v1/kpis/{kpi.name}/readiness?queue={name}, then run "
                    f"`opportune train routing --queue {name}`",
                },
            )
        since = int(loaded.card.get("window", {}).get("toMs", 0)) + 1
        with router.engine.connect() as conn:
            fresh = [
                r
                for r in load_history(conn, name, kpi, now_ms=now(), since_ms=since)
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

    return api


def _thresholds() -> ReadinessThresholds:
    return ReadinessThresholds()


def record_id(rec: AttributionIn) -> str:
    """A record without an id is identified by what it says: the same outcome of the same
    customer at the same time crediting the same conversations is the same record."""
    who = rec.customer_id or f"ext:{rec.external_contact_id}"
    convs = ",".join(sorted(t.conversation_id for t in rec.touchpoints))
    text = f"{rec.outcome_id}\x00{who}\x00{_ms(rec.created_date)}\x00{convs}"
    return "att-" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _check(conn: Any, rec: AttributionIn, known: dict[str, str]) -> str | None:
    if rec.outcome_id not in known:
        return (
            f"outcomeId {rec.outcome_id!r} is not the outcome id of a KPI tracked by outcome "
            "(GET /v1/kpis lists them)"
        )
    if not rec.customer_id and not rec.external_contact_id:
        return "customerId or externalContactId is required"
    if sum(t.value_share for t in rec.touchpoints) > 1.0 + 1e-9:
        return "the touchpoints' value shares add up to more than 1"
    for t in rec.touchpoints:
        row = conn.execute(
            select(interactions.c.agent_id, interactions.c.status).where(
                interactions.c.id == t.conversation_id
            )
        ).first()
        if row is None:
            return f"conversation {t.conversation_id!r} is not known"
        if row.agent_id != t.agent_id:
            return (
                f"conversation {t.conversation_id!r} was handled by {row.agent_id!r}, "
                f"not {t.agent_id!r}"
            )
    return None
