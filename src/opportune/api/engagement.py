"""Admin REST for engagement: queue presence (for pacing), why each action map did or did
not fire for a visitor, the uplift of a map against its holdout, and dead letters."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy import Engine, and_, func, select, update

from opportune.core.actionmaps import Engagement, decide
from opportune.core.pacing import decide as pace
from opportune.core.valuation import compare, summarise
from opportune.engine.ingest import Ingestor
from opportune.store.schema import (
    action_events,
    outcome_achievements,
    queue_presence,
    webhook_deliveries,
)

DAY_MS = 86_400_000


class PresenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    agents_available: int = Field(ge=0, le=100_000)
    busy_slots: int = Field(default=0, ge=0, le=1_000_000)
    waiting: int = Field(default=0, ge=0, le=1_000_000)


def _not_found(what: str) -> HTTPException:
    return HTTPException(404, detail={"code": "not_found", "message": f"{what} not found"})


def engagement_router(*, ingestor: Ingestor, require_api_key: Callable[..., None]) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["engagement"])
    rules = ingestor.rules
    board = ingestor.engager.board

    def engine() -> Engine:
        return ingestor.engine

    @router.get("/queues")
    def queues() -> dict[str, Any]:
        now = int(time.time() * 1000)
        outlooks = board.outlooks(now)
        items = []
        for name, q in sorted(rules.workspace.queues.items()):
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
        return {"items": items}

    @router.put("/queues/{name}/presence")
    def set_presence(name: str, body: PresenceIn) -> dict[str, Any]:
        """Agents present on a chat queue (until routing reports it itself)."""
        if name not in rules.workspace.queues:
            raise _not_found(f"queue {name!r}")
        now = int(time.time() * 1000)
        values = {
            "agents_available": body.agents_available,
            "busy_slots": body.busy_slots,
            "waiting": body.waiting,
            "updated_at": now,
        }
        with engine().begin() as conn:
            done = conn.execute(
                update(queue_presence).where(queue_presence.c.queue == name).values(**values)
            )
            if done.rowcount == 0:
                conn.execute(queue_presence.insert().values(queue=name, **values))
        board.refresh(engine())
        return {"queue": name, **body.model_dump(by_alias=True), "updatedAt": now}

    @router.get("/visitors/{visitor_id}/explain")
    async def explain(visitor_id: str) -> dict[str, Any]:
        """Why each action map did or did not fire for this visitor, as of now."""
        now = int(time.time() * 1000)
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
            outlooks=board.outlooks(now),
            pacing=ingestor.engager.pacing,
            assignments=state.assignments,
            explain=True,
        )
        with engine().connect() as conn:
            history = conn.execute(
                select(
                    action_events.c.map,
                    action_events.c.state,
                    action_events.c.reason,
                    action_events.c.at,
                )
                .where(action_events.c.session_id == j.session_id)
                .order_by(action_events.c.at, action_events.c.id)
            ).all()
        by_map: dict[str, list[dict[str, Any]]] = {}
        for m, st, reason, at in history:
            by_map.setdefault(m, []).append({"state": st, "reason": reason, "at": at})
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
        since = int(time.time() * 1000) - days * DAY_MS
        arms: dict[str, list[float]] = {"engaged": [], "holdout": []}
        with engine().connect() as conn:
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
        for sid, (st, at) in visits.items():
            # Only what happened after the decision counts: achieved later in the visit.
            hit = sid in won and won[sid] >= at
            arms["engaged" if st == "offered" else "holdout"].append(1.0 if hit else 0.0)
        out: dict[str, Any] = {
            "map": name,
            "outcome": outcome,
            "days": days,
            "engaged": {"visits": len(arms["engaged"]), "achieved": int(sum(arms["engaged"]))},
            "holdout": {"visits": len(arms["holdout"]), "achieved": int(sum(arms["holdout"]))},
        }
        if arms["engaged"] and arms["holdout"]:
            c = compare(summarise(arms["engaged"]), summarise(arms["holdout"]), binary=True)
            out.update(
                engagedRate=c.test_rate,
                holdoutRate=c.control_rate,
                uplift=c.uplift,
                relativeUplift=None if math.isnan(c.relative_uplift) else c.relative_uplift,
                ciLow=c.ci_low,
                ciHigh=c.ci_high,
                pValue=c.p_value,
                method=c.ci_method,
            )
        else:
            out["note"] = "both arms need visits: no uplift yet"
        return out

    @router.get("/webhooks/dead-letters")
    def dead_letters(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        t = webhook_deliveries
        with engine().connect() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.map, t.c.url, t.c.attempts, t.c.last_error, t.c.done_at)
                .where(t.c.status == "dead")
                .order_by(t.c.done_at.desc())
                .limit(limit)
            ).all()
        return {
            "items": [
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
        }

    @router.post("/webhooks/{delivery_id}/retry")
    def retry(delivery_id: str) -> dict[str, Any]:
        """Send a dead letter again (after fixing the receiver or the secret)."""
        t = webhook_deliveries
        now = int(time.time() * 1000)
        with engine().begin() as conn:
            done = conn.execute(
                update(t)
                .where(t.c.id == delivery_id, t.c.status == "dead")
                .values(
                    status="pending", next_at=now, claimed_until=0, max_attempts=t.c.attempts + 1
                )
            )
            if done.rowcount == 0:
                found = conn.execute(select(func.count()).where(t.c.id == delivery_id)).scalar()
                if not found:
                    raise _not_found(f"delivery {delivery_id!r}")
                raise HTTPException(
                    409, detail={"code": "not_dead", "message": "only dead letters are retried"}
                )
        return {"retrying": delivery_id}

    return router
