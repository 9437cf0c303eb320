"""Ingestion: a decoded batch of one visitor becomes sessions and stored events.

Everything per event is decided in memory against the visitor's live state (placement in
a session, de-duplication, enrichment at the start of a visit); the database is touched
only by the group-commit writer, and the answer waits for that commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import Engine, select

from opportune.core.action_types import payload
from opportune.core.actionmaps import answered, instance_id
from opportune.core.events import Batch, Recheck, Refusal, ReportBatch, check_event
from opportune.core.journey import Journey, JourneyEvent
from opportune.core.session import SessionTrack, landing_attributes, place
from opportune.engine.engagement import Engager, Outcome, locale_of, prefill_sources
from opportune.engine.enrichment import GeoResolver, parse_user_agent
from opportune.engine.live import LiveStore, Loader, MemoryLiveStore, Slot, VisitorLive
from opportune.engine.rules import RuleBook
from opportune.engine.scoring import OutcomeScorer
from opportune.settings import Settings
from opportune.store.facts import (
    active_assignments,
    past_outcomes,
    recorded_state,
    session_facts,
    session_history,
)
from opportune.store.schema import events, sessions
from opportune.store.visits import session_row
from opportune.store.writer import GroupCommitWriter, IdentifyOp, WriteJob
from opportune.workspace import Site, Workspace

log = logging.getLogger(__name__)

_ENCODE = msgspec.json.Encoder()


class _VisitorRow(NamedTuple):
    site_id: str
    customer_id: str | None
    first_seen_at: int


class IngestError(Exception):
    """A batch refused whole: HTTP status, a stable code, a message and the field path."""

    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.path = path


@dataclass(slots=True)
class IngestResult:
    accepted: int
    duplicates: int
    refused: list[Refusal]
    visitor_id: str
    session_id: str | None
    customer_id: str | None
    visit_number: int
    segments: list[str] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    recheck_in_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "refused": [{"index": r.index, "id": r.id, "reason": r.reason} for r in self.refused],
            "visitorId": self.visitor_id,
            "sessionId": self.session_id,
            "customerId": self.customer_id,
            "visitNumber": self.visit_number,
            "segments": self.segments,
            "outcomes": self.outcomes,
            **({"scores": self.scores} if self.scores else {}),
            **({"actions": self.actions} if self.actions else {}),
            **({"recheckInMs": self.recheck_in_ms} if self.recheck_in_ms else {}),
            **self.extra,
        }


class Ingestor:
    """Turns batches into durable rows; owns the live state and the writer."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        writer: GroupCommitWriter,
        geo: GeoResolver,
        live: Callable[[Loader], LiveStore] | None = None,
        rules: RuleBook | None = None,
        scorer: OutcomeScorer | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.writer = writer
        self.geo = geo
        self.rules = rules or RuleBook(Workspace())
        self.scorer = scorer or OutcomeScorer()
        ws = self.rules.workspace
        self.engager = Engager(ws.engagement, ws.queues)
        self._rule_errors: set[str] = set()
        self.live: LiveStore = (live or MemoryLiveStore)(self.load)
        self._max_age_ms = settings.max_event_age_s * 1000
        self._max_future_ms = settings.max_future_skew_s * 1000
        self._sqlite = engine.dialect.name == "sqlite"
        ph = "?" if self._sqlite else "%s"
        self._visitor_sql = (
            f"SELECT site_id, customer_id, first_seen_at FROM visitors WHERE id = {ph}"
        )

    async def load(self, visitor_id: str, now_ms: int) -> VisitorLive | None:
        """The loader the live stores call on a miss."""
        if self._sqlite:
            # An indexed SQLite read is a few microseconds of in-process work: cheaper on the
            # loop than the hop to a thread (and no GIL contention with it).
            return self.load_visitor(visitor_id, now_ms)
        return await asyncio.to_thread(self.load_visitor, visitor_id, now_ms)

    def load_visitor(self, visitor_id: str, now_ms: int) -> VisitorLive | None:
        """Rebuild a visitor's live state from the database (None: never seen)."""
        horizon = now_ms - self._max_age_ms - self._max_future_ms - 60_000
        with self.engine.connect() as conn:
            # Most misses are new visitors: answer those with one driver-level lookup.
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cur.execute(self._visitor_sql, (visitor_id,))
                row = cur.fetchone()
            finally:
                cur.close()
            if row is None:
                return None
            row = _VisitorRow(*row)
            recent = conn.execute(
                select(
                    sessions.c.id,
                    sessions.c.number,
                    sessions.c.started_at,
                    sessions.c.last_event_at,
                )
                .where(sessions.c.visitor_id == visitor_id)
                .order_by(sessions.c.number.desc())
                .limit(2)
            ).all()
            ids = conn.execute(
                select(events.c.event_id, events.c.ts).where(
                    events.c.visitor_id == visitor_id, events.c.ts >= horizon
                )
            ).all()
            assignments = active_assignments(
                conn, visitor_id=visitor_id, customer_id=row.customer_id, now_ms=now_ms
            )
            past = past_outcomes(conn, visitor_id, recent[0].started_at) if recent else {}
            journey = (
                self._replay(
                    conn,
                    recent[0].id,
                    assignments,
                    past,
                    recent[1].last_event_at if len(recent) > 1 else 0,
                )
                if recent
                else None
            )
        track = SessionTrack()
        if recent:
            cur = recent[0]
            track.number, track.session_id = cur.number, cur.id
            track.started_at, track.last_at = cur.started_at, cur.last_event_at
            if len(recent) > 1:
                prev = recent[1]
                track.previous_id = prev.id
                track.previous_started_at, track.previous_last_at = (
                    prev.started_at,
                    prev.last_event_at,
                )
        return VisitorLive(
            site_id=row.site_id,
            customer_id=row.customer_id,
            first_seen_at=row.first_seen_at,
            track=track,
            recent_ids={r.event_id: r.ts for r in ids},
            journey=journey,
            assignments=assignments,
            past_outcomes=past,
        )

    def _replay(
        self,
        conn: Any,
        session_id: str,
        assignments: dict[str, list[int]],
        past: dict[str, int],
        previous_visit_at: int,
    ) -> Journey | None:
        """The visit's journey rebuilt from its stored events under the rules in force, with
        the segments and outcomes as recorded: the next event evaluates every rule and
        records only the differences (so a new or changed rule applies at once)."""
        found = session_history(conn, session_id)
        if found is None:
            return None
        srow, history, traits = found
        rs = self.rules.ruleset
        j = Journey(
            session_id=session_id,
            started_at=srow.started_at,
            facts=session_facts(srow._mapping),
            visit_number=srow.number,
            traits=traits,
            previous_visit_at=previous_visit_at,
            past_outcomes=dict(past),
            rules=rs.fingerprint,
        )
        if srow.customer_id:
            j.facts["identified"] = True
        scratch = {k: list(v) for k, v in assignments.items()}
        scorer = self.scorer if len(self.scorer) else None
        for ev in history:
            rs.step(j, ev, max(j.last_at, ev.ts), scratch, scorer)
        j.segments, j.outcomes = recorded_state(conn, session_id)
        j.full = True
        return j

    def rebuild_journey(self, visitor_id: str, state: VisitorLive) -> Journey | None:
        """The current visit's journey from the database (rules changed, or none held)."""
        sid = state.track.session_id
        if sid is None:
            return None
        with self.engine.connect() as conn:
            return self._replay(
                conn, sid, state.assignments, state.past_outcomes, state.track.previous_last_at
            )

    def assignments_of(
        self, visitor_id: str, customer_id: str | None, now_ms: int
    ) -> dict[str, list[int]]:
        with self.engine.connect() as conn:
            return active_assignments(
                conn, visitor_id=visitor_id, customer_id=customer_id, now_ms=now_ms
            )

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._sqlite:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def ingest(
        self,
        batch: Batch,
        site: Site,
        *,
        now_ms: int,
        headers: Mapping[str, str],
        peer: str | None,
    ) -> IngestResult:
        """Accept what can be accepted of ``batch``; return after it is committed."""
        if len(batch.events) > self.settings.max_batch_events:
            raise IngestError(
                413,
                "batch_too_long",
                f"{len(batch.events)} events in one batch; at most "
                f"{self.settings.max_batch_events}",
                "$.events",
            )
        async with self.live.hold(batch.visitor_id, now_ms) as slot:
            return await self._ingest(batch, site, slot, now_ms=now_ms, headers=headers, peer=peer)

    async def _ingest(
        self,
        batch: Batch,
        site: Site,
        slot: Slot,
        *,
        now_ms: int,
        headers: Mapping[str, str],
        peer: str | None,
    ) -> IngestResult:
        vid = batch.visitor_id
        if slot.state is None:
            slot.create(
                VisitorLive(
                    site_id=site.name,
                    customer_id=None,
                    first_seen_at=now_ms,
                    track=SessionTrack(),
                )
            )
        state = slot.state
        assert state is not None
        if state.site_id != site.name:
            raise IngestError(
                409,
                "visitor_of_another_site",
                "this visitor id belongs to another site",
                "$.visitorId",
            )
        rs = self.rules.ruleset
        scorer = self.scorer if len(self.scorer) else None
        stale = state.journey is None or state.journey.rules != rs.fingerprint
        if stale and state.track.session_id is not None and rs:
            # The rules changed since this visit's journey was built (or it has none):
            # rebuild it from the stored visit, once its earlier writes are durable.
            await slot.settled()
            state.journey = await self._db(self.rebuild_journey, vid, state)
        customer_before = state.customer_id
        timeout_ms = site.session_timeout_minutes * 60_000
        skew = now_ms - batch.sent_at
        refused: list[Refusal] = []
        duplicates = 0
        session_rows: dict[str, dict[str, Any]] = {}
        event_rows: list[tuple[Any, ...]] = []
        identifies: list[IdentifyOp] = []
        seg_rows: list[tuple[Any, ...]] = []
        won: list[tuple[Any, ...]] = []
        last_ts = 0
        last_sid: str | None = state.track.session_id
        device = geo = None
        for i, ev in enumerate(batch.events):
            refusal = check_event(
                ev,
                index=i,
                now_ms=now_ms,
                skew_ms=skew,
                max_age_ms=self._max_age_ms,
                max_future_ms=self._max_future_ms,
            )
            if refusal is not None:
                refused.append(refusal)
                continue
            if ev.id in state.recent_ids:
                duplicates += 1
                continue
            ts = ev.ts + skew
            state.recent_ids[ev.id] = ts
            sid, new = place(state.track, vid, ts, timeout_ms)
            last_sid = sid
            last_ts = max(last_ts, ts)
            row = session_rows.get(sid)
            if row is None:
                row = _session_row(sid, site.name, vid, state.customer_id, ts)
                session_rows[sid] = row
            if new:
                if device is None:
                    device = parse_user_agent(headers.get("user-agent", "")[:512])
                    geo = self.geo.resolve(dict(headers), peer)
                assert geo is not None
                row.update(
                    _new=True,
                    number=state.track.number,
                    started_at=ts,
                    device_type=device.device_type,
                    browser=device.browser and device.browser[:64],
                    os=device.os and device.os[:64],
                    country=geo.country,
                    region=geo.region and geo.region[:64],
                    city=geo.city and geo.city[:128],
                    locale=batch.context.locale,
                    timezone=batch.context.timezone,
                )
            row["event_count"] += 1
            row["last_event_at"] = max(row["last_event_at"], ts)
            row["started_at"] = min(row["started_at"], ts)
            landed = False
            if ev.type == "page_view":
                row["page_count"] += 1
                if row["landing_url"] is None and (new or row.get("_new")):
                    row.update(landing_attributes(ev.url, ev.referrer))
                    landed = True
            if sid == state.track.session_id and (rs or scorer is not None):
                j = state.journey
                if j is None or j.session_id != sid:
                    if j is not None:  # the visit before ends: its outcomes become history
                        for name in j.outcomes:
                            state.past_outcomes[name] = state.past_outcomes.get(name, 0) + 1
                    j = state.journey = Journey(
                        session_id=sid,
                        started_at=state.track.started_at,
                        facts=session_facts(row),
                        visit_number=state.track.number,
                        previous_visit_at=state.track.previous_last_at,
                        past_outcomes=dict(state.past_outcomes),
                        rules=rs.fingerprint,
                    )
                    if state.customer_id:
                        j.facts["identified"] = True
                elif landed:
                    j.facts.update(session_facts(row))
                jev = JourneyEvent(
                    ev.type,
                    ts,
                    ev.url,
                    ev.name,
                    ev.query,
                    ev.traits if ev.type == "identify" else ev.attributes,
                    ev.id,
                )
                at = max(j.last_at, ts)
                changes = rs.step(j, jev, at, state.assignments, scorer)
                if changes:
                    cid = state.customer_id
                    for name, t in changes.entered:
                        seg_rows.append((site.name, name, "entered", t, None, sid, vid, cid))
                    for name, t in changes.left:
                        seg_rows.append((site.name, name, "left", t, None, sid, vid, cid))
                    for name, _since, expires in changes.assigned:
                        seg_rows.append((site.name, name, "assigned", at, expires, sid, vid, cid))
                    for name, t, value in changes.achieved:
                        won.append((sid, name, site.name, vid, cid, t, value, ev.id))
                    for name, message in changes.errors:
                        if name not in self._rule_errors:  # once per rule, not per event
                            self._rule_errors.add(name)
                            log.error("rule %r failed and counts as not matched: %s", name, message)
            data: dict[str, Any] | None = None
            if ev.attributes:
                data = dict(ev.attributes)
            if ev.type == "identify":
                identifies.append(
                    IdentifyOp(
                        site.name,
                        vid,
                        i,
                        ev.identity,
                        dict(ev.traits),
                        now_ms,
                        site.default_phone_region,
                    )
                )
                # Identifiers live only in the customer tables; the event keeps the traits'
                # keys so the journey shows that an identify happened, without personal data.
                data = {"traitKeys": sorted(ev.traits)} if ev.traits else None
            # In EVENT_COLUMNS order.
            event_rows.append(
                (
                    vid,
                    ts,
                    ev.id,
                    site.name,
                    sid,
                    now_ms,
                    i,
                    ev.type,
                    ev.url,
                    ev.name,
                    ev.query,
                    ev.title,
                    ev.referrer,
                    _ENCODE.encode(data).decode() if data else None,
                )
            )
        engaged = None
        j = state.journey
        if self.rules.maps and event_rows and j is not None and j.session_id == last_sid:
            engaged = self._engage(site.name, vid, state, j, now_ms)
        # The visitor row changes only when a visit starts (most batches continue one), so
        # it is written only then: one statement less per batch on the hot path.
        new_visit = any(r.get("_new") for r in session_rows.values())
        job = WriteJob(
            visitor={
                "id": vid,
                "site_id": site.name,
                "customer_id": state.customer_id,
                "first_seen_at": state.first_seen_at,
                "last_visit_at": state.track.started_at,
                "session_count": state.track.number,
            }
            if new_visit
            else None,
            sessions=list(session_rows.values()),
            events=event_rows,
            identifies=identifies,
            segment_changes=seg_rows,
            achievements=won,
            action_events=engaged.action_rows if engaged else [],
            webhooks=engaged.webhook_rows if engaged else [],
        )
        outcomes: list[Any] = []
        if job.visitor is not None or job.events:
            # If this fails, the store forgets the state (see ``LiveStore.hold``).
            job.future = slot.write = asyncio.get_running_loop().create_future()
            outcomes = await self.writer.submit(job)
        elif duplicates:
            # Answer "duplicate" only once the original is durable.
            await slot.settled()
        for op, outcome in zip(identifies, outcomes, strict=True):
            if outcome.customer_id is not None:
                state.customer_id = outcome.customer_id
            for reason in outcome.refusals:
                refused.append(Refusal(op.event_index, batch.events[op.event_index].id, reason))
        if state.customer_id is not None and state.customer_id != customer_before:
            # Newly identified: the customer's assignments from its other devices apply here.
            if rs:
                more = await self._db(self.assignments_of, vid, state.customer_id, now_ms)
                for name, (since, expires) in more.items():
                    mine = state.assignments.get(name)
                    if mine is None or mine[1] < expires:
                        state.assignments[name] = [min(since, mine[0]) if mine else since, expires]
            if state.journey is not None:
                state.journey.facts["identified"] = True
        state.prune(now_ms - self._max_age_ms - self._max_future_ms)
        refused.sort(key=lambda r: r.index)
        j = state.journey
        current = j is not None and j.session_id == state.track.session_id
        at = j.last_at if current and j is not None else now_ms
        actions = await self._actions(engaged, state) if engaged else []
        return IngestResult(
            accepted=len(event_rows),
            duplicates=duplicates,
            refused=refused,
            visitor_id=vid,
            session_id=last_sid,
            customer_id=state.customer_id,
            visit_number=state.track.number,
            segments=list(rs.members(j if current else None, state.assignments, at)),
            outcomes=list(j.outcomes) if current and j is not None else [],
            scores=_scores(j) if current and j is not None else {},
            actions=actions,
            recheck_in_ms=engaged.decision.recheck_in_ms if engaged else None,
        )

    def _engage(self, site_id: str, vid: str, state: VisitorLive, j: Journey, now: int) -> Outcome:
        return self.engager.run(
            site_id=site_id,
            visitor_id=vid,
            customer_id=state.customer_id,
            journey=j,
            members=self.rules.ruleset.members(j, state.assignments, now),
            engagement=state.engagement,
            maps=self.rules.maps,
            assignments=state.assignments,
            now=now,
        )

    async def _actions(self, engaged: Outcome, state: VisitorLive) -> list[dict[str, Any]]:
        """The widget's view of this batch's offers (forms prefilled from what is known)."""
        j = state.journey
        if not engaged.decision.offers or j is None:
            return []
        needs = any(
            f.get("prefill")
            for fired in engaged.decision.offers
            for f in (fired.map.action.get("chat", {}).get("form") or {}).get("fields", [])
        )
        known = await self._db(prefill_sources, self.engine, j, state.customer_id) if needs else {}
        return [payload(f.instance, f.map, locale_of(j), known) for f in engaged.decision.offers]

    async def recheck(self, req: Recheck, site: Site, *, now_ms: int) -> IngestResult:
        """Look at a visitor's action maps again now: time-based triggers, delayed offers."""
        async with self.live.hold(req.visitor_id, now_ms) as slot:
            state = slot.state
            if state is None or state.site_id != site.name:
                raise IngestError(404, "unknown_visitor", "no such visitor", "$.visitorId")
            j = state.journey
            engaged = None
            if self.rules.maps and j is not None and j.session_id == state.track.session_id:
                if j.rules != self.rules.ruleset.fingerprint:
                    await slot.settled()
                    j = state.journey = await self._db(self.rebuild_journey, req.visitor_id, state)
                if j is not None:
                    engaged = self._engage(site.name, req.visitor_id, state, j, now_ms)
            if engaged and (engaged.action_rows or engaged.webhook_rows):
                job = WriteJob(
                    visitor=None,
                    sessions=[],
                    events=[],
                    action_events=engaged.action_rows,
                    webhooks=engaged.webhook_rows,
                )
                job.future = slot.write = asyncio.get_running_loop().create_future()
                await self.writer.submit(job)
            return IngestResult(
                accepted=0,
                duplicates=0,
                refused=[],
                visitor_id=req.visitor_id,
                session_id=state.track.session_id,
                customer_id=state.customer_id,
                visit_number=state.track.number,
                segments=list(self.rules.ruleset.members(j, state.assignments, now_ms))
                if j is not None
                else [],
                outcomes=list(j.outcomes) if j is not None else [],
                actions=await self._actions(engaged, state) if engaged else [],
                recheck_in_ms=engaged.decision.recheck_in_ms if engaged else None,
            )

    async def report(self, batch: ReportBatch, site: Site, *, now_ms: int) -> dict[str, Any]:
        """Store what the widget reports of its offers; refuse unknown instances one by one."""
        async with self.live.hold(batch.visitor_id, now_ms) as slot:
            state = slot.state
            if state is None or state.site_id != site.name:
                raise IngestError(404, "unknown_visitor", "no such visitor", "$.visitorId")
            e = state.engagement
            by_instance = {instance_id(e.session_id, name): name for name in e.maps}
            channel_of = {m.name: m.channel for m in self.rules.maps}
            skew = now_ms - batch.sent_at
            rows: list[tuple[Any, ...]] = []
            refused: list[dict[str, Any]] = []
            for i, r in enumerate(batch.reports):
                name = by_instance.get(r.id)
                if name is None:
                    refused.append(
                        {
                            "index": i,
                            "id": r.id,
                            "reason": "unknown action instance for this visitor's current visit",
                        }
                    )
                    continue
                at = min(r.ts + skew, now_ms)
                channel = channel_of.get(name, "content")
                answered(e, r.id, r.state, at, channel)
                if r.state != "offered":
                    self.engager.board.answered(r.id)
                detail = json.dumps({"fields": sorted(r.form)}) if r.form else None
                rows.append(
                    (
                        site.name,
                        name,
                        r.id,
                        r.state,
                        None,
                        at,
                        e.session_id,
                        batch.visitor_id,
                        state.customer_id,
                        detail,
                    )
                )
            if rows:
                job = WriteJob(visitor=None, sessions=[], events=[], action_events=rows)
                job.future = slot.write = asyncio.get_running_loop().create_future()
                await self.writer.submit(job)
            return {"accepted": len(rows), "refused": refused}


def _scores(j: Journey) -> dict[str, dict[str, float]]:
    return {
        name: {
            "probability": round(p, 4),
            "maxProbability": round(mp, 4),
            "quantile": round(q, 4),
            "maxQuantile": round(mq, 4),
        }
        for name, (p, mp, q, mq) in j.scores.items()
    }


def _session_row(sid: str, site_id: str, vid: str, customer_id: str | None, ts: int) -> dict:
    return session_row(
        session_id=sid, site_id=site_id, visitor_id=vid, customer_id=customer_id, ts=ts
    )
