"""Admin REST for engagement: queue presence (for pacing), why each action map did or did
not fire for a visitor, the uplift of a map against its holdout, and dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, HTTPException, Query
from pydantic import Field
from sqlalchemy import Engine, and_, func, select, update
from sqlalchemy.engine import Connection

from opportune.api.auth import admin_router
from opportune.api.errors import error, not_found
from opportune.api.inputs import CamelIn, now_ms
from opportune.api.uplift import uplift_json
from opportune.core.actionmaps import Engagement, decide
from opportune.core.pacing import decide as pace
from opportune.core.valuation import compare, summarise
from opportune.engine.ingest import Ingestor
from opportune.store import interactions as interactions_store
from opportune.store.schema import (
    action_events,
    outcome_achievements,
    webhook_deliveries,
)

DAY_MS = 86_400_000


class PresenceIn(CamelIn):
    agents_available: int = Field(ge=0, le=100_000)
    busy_slots: int = Field(default=0, ge=0, le=1_000_000)
    waiting: int = Field(default=0, ge=0, le=1_000_000)


def _not_found(what: str) -> HTTPException:
    return not_found(f"{what} not found")


def engagement_router(*, ingestor: Ingestor, require_api_key: Callable[..., None]) -> APIRouter:
    router = admin_router(require_api_key, tags=["engagement"])
    rules = ingestor.rules

    @router.get("/queues")
    def queues() -> dict[str, Any]:
        return {"items": _queues(ingestor, now_ms())}

    @router.put("/queues/{name}/presence")
    def set_presence(name: str, body: PresenceIn) -> dict[str, Any]:
        """Agents present on a chat queue (until routing reports it itself)."""
        if name not in rules.workspace.queues:
            raise _not_found(f"queue {name!r}")
        now = now_ms()
        _store_presence(ingestor.engine, name, body, now)
        ingestor.engager.board.refresh(ingestor.engine)
        return {"queue": name, **body.model_dump(by_alias=True), "updatedAt": now}

    @router.get("/visitors/{visitor_id}/explain")
    async def explain(visitor_id: str) -> dict[str, Any]:
        """Why each action map did or did not fire for this visitor, as of now."""
        return await explain_visitor(ingestor, visitor_id, now_ms())

    @router.get("/action-maps/{name}/uplift")
    def uplift(
        name: str,
        outcome: Annotated[str, Query(min_length=1)],
        days: Annotated[int, Query(ge=1, le=400)] = 30,
    ) -> dict[str, Any]:
        """Outcome rate of engaged vs held-out visits of a map, with a 95% interval."""
        if rules.get("actionMap", name) is None:
            raise _not_found(f"action map {name!r}")
        if rules.get("outcome", outcome) is None:
            raise _not_found(f"outcome {outcome!r}")
        since = now_ms() - days * DAY_MS
        with ingestor.engine.connect() as conn:
            arms = _map_arms(conn, name, outcome, since)
        return _uplift(name, outcome, days, arms)

    @router.get("/webhooks/dead-letters")
    def dead_letters(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        with ingestor.engine.connect() as conn:
            return {"items": _dead_letters(conn, limit)}

    @router.post("/webhooks/{delivery_id}/retry")
    def retry(delivery_id: str) -> dict[str, Any]:
        """Send a dead letter again (after fixing the receiver or the secret)."""
        with ingestor.engine.begin() as conn:
            _retry(conn, delivery_id, now_ms())
        return {"retrying": delivery_id}

    return router


def _queues(ingestor: Ingestor, now: int) -> list[dict[str, Any]]:
    board = ingestor.engager.board
    outlooks = board.outlooks(now)
    items = []
    for name, q in sorted(ingestor.rules.workspace.queues.items()):
        o = outlooks[name]
        paced = pace(o, ingestor.engager.pacing)
        p = board.presence.get(name)
        items.append(
            {
                "name": name,
                "description": q.description,
                "agentsAvailable": o.agents_available,
                "busySlots": o.busy_slots,
                "waiting": o.waiting,
                "pendingOffers": o.pending_offers,
                "presenceUpdatedAt": p.updated_at if p else None,
                "offering": paced.offer,
                "predictedServiceLevel": round(paced.predicted_service_level, 4),
                "predictedWaitS": None
                if paced.predicted_wait_s == float("inf")
                else round(paced.predicted_wait_s, 2),
                "reason": paced.reason,
            }
        )
    return items


def _store_presence(engine: Engine, name: str, body: PresenceIn, now: int) -> None:
    with engine.begin() as conn:
        interactions_store.set_queue_presence(
            conn,
            name,
            available=body.agents_available,
            busy=body.busy_slots,
            waiting=body.waiting,
            now_ms=now,
        )


async def explain_visitor(ingestor: Ingestor, visitor_id: str, now: int) -> dict[str, Any]:
    """Why each action map would or would not fire for ``visitor_id`` now (a dry run), with
    each map's actions in the current visit: the REST explain's and the console's."""
    rules = ingestor.rules
    state = await ingestor.live.peek(visitor_id, now)
    if state is None:
        raise _not_found(f"visitor {visitor_id!r}")
    j = state.journey
    if j is not None and not j.is_current(rules.ruleset.fingerprint):
        j = await asyncio.to_thread(ingestor.rebuild_journey, visitor_id, state)
    if j is None or j.session_id != state.track.session_id:
        return {"visitorId": visitor_id, "sessionId": state.track.session_id, "maps": []}
    # A dry run on a copy: explaining never changes what the visitor will be offered.
    copy = msgspec.msgpack.decode(msgspec.msgpack.encode(state.engagement), type=Engagement)
    d = decide(
        visitor_id=visitor_id,
        journey=j,
        members=rules.ruleset.members(j, state.assignments, now),
        engagement=copy,
        maps=rules.maps,
        now=now,
        caps=ingestor.engager.caps,
        outlooks=ingestor.engager.board.outlooks(now),
        pacing=ingestor.engager.pacing,
        assignments=state.assignments,
        explain=True,
    )
    with ingestor.engine.connect() as conn:
        by_map = _action_history(conn, j.session_id)
    return {
        "visitorId": visitor_id,
        "sessionId": j.session_id,
        "maps": [
            {
                "name": m.name,
                "channel": m.channel,
                "priority": m.priority,
                "now": d.why.get(m.name, ""),
                "history": by_map.get(m.name, []),
            }
            for m in rules.maps
        ],
    }


def _action_history(conn: Connection, session_id: str) -> dict[str, list[dict[str, Any]]]:
    history = conn.execute(
        select(
            action_events.c.map, action_events.c.state, action_events.c.reason, action_events.c.at
        )
        .where(action_events.c.session_id == session_id)
        .order_by(action_events.c.at, action_events.c.id)
    ).all()
    by_map: dict[str, list[dict[str, Any]]] = {}
    for m, st, reason, at in history:
        by_map.setdefault(m, []).append({"state": st, "reason": reason, "at": at})
    return by_map


def _map_arms(conn: Connection, name: str, outcome: str, since: int) -> dict[str, list[float]]:
    """Per arm (engaged, holdout), 1.0 for each visit that achieved the outcome after the
    map's decision, else 0.0."""
    q = select(action_events.c.session_id, action_events.c.state, action_events.c.at).where(
        and_(
            action_events.c.map == name,
            action_events.c.state.in_(["offered", "holdout"]),
            action_events.c.at >= since,
        )
    )
    visits = {sid: (st, at) for sid, st, at in conn.execute(q)}
    won = {
        sid: at
        for sid, at in conn.execute(
            select(outcome_achievements.c.session_id, outcome_achievements.c.achieved_at)
            .where(outcome_achievements.c.outcome == outcome)
            .where(outcome_achievements.c.session_id.in_(list(visits) or [""]))
        )
    }
    arms: dict[str, list[float]] = {"engaged": [], "holdout": []}
    for sid, (st, at) in visits.items():
        # Only what happened after the decision counts: achieved later in the visit.
        hit = sid in won and won[sid] >= at
        arms["engaged" if st == "offered" else "holdout"].append(1.0 if hit else 0.0)
    return arms


def _uplift(name: str, outcome: str, days: int, arms: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "map": name,
        "outcome": outcome,
        "days": days,
        "engaged": {"visits": len(arms["engaged"]), "achieved": int(sum(arms["engaged"]))},
        "holdout": {"visits": len(arms["holdout"]), "achieved": int(sum(arms["holdout"]))},
    }
    if arms["engaged"] and arms["holdout"]:
        c = compare(summarise(arms["engaged"]), summarise(arms["holdout"]), binary=True)
        out.update(engagedRate=c.test_rate, holdoutRate=c.control_rate)
        out.update(uplift_json(c))
    else:
        out["note"] = "both arms need visits: no uplift yet"
    return out


def _dead_letters(conn: Connection, limit: int) -> list[dict[str, Any]]:
    t = webhook_deliveries
    rows = conn.execute(
        select(t.c.id, t.c.map, t.c.url, t.c.attempts, t.c.last_error, t.c.done_at)
        .where(t.c.status == "dead")
        .order_by(t.c.done_at.desc())
        .limit(limit)
    ).all()
    return [
        {
            "id": r.id,
            "map": r.map,
            "url": r.url,
            "attempts": r.attempts,
            "lastError": r.last_error,
            "deadAt": r.done_at,
        }
        for r in rows
    ]


def _retry(conn: Connection, delivery_id: str, now: int) -> None:
    t = webhook_deliveries
    done = conn.execute(
        update(t)
        .where(t.c.id == delivery_id, t.c.status == "dead")
        .values(status="pending", next_at=now, claimed_until=0, max_attempts=t.c.attempts + 1)
    )
    if done.rowcount == 0:
        found = conn.execute(select(func.count()).where(t.c.id == delivery_id)).scalar()
        if not found:
            raise _not_found(f"delivery {delivery_id!r}")
        raise error(409, "not_dead", "only dead letters are retried")
