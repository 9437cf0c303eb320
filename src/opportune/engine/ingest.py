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
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine

from opportune.core.action_types import payload
from opportune.core.actionmaps import answered, instance_id
from opportune.core.assignments import merge_assignments
from opportune.core.events import (
    Batch,
    Event,
    Recheck,
    Refusal,
    ReportBatch,
    check_event,
    unstorable_context,
)
from opportune.core.journey import Journey, JourneyEvent, past_outcomes_after
from opportune.core.session import SessionTrack, place
from opportune.engine.answer import IngestResult
from opportune.engine.engagement import Engager, Outcome, locale_of, prefill_sources
from opportune.engine.enrichment import GeoResolver
from opportune.engine.history import StoredHistory
from opportune.engine.identify import Linked, identify_indexes, linked_customers
from opportune.engine.live import LiveStore, Loader, MemoryLiveStore, Slot, VisitorLive
from opportune.engine.live_now import LiveBoard
from opportune.engine.placement import Arrival, count_event, start_visit
from opportune.engine.rows import BatchRows, Verdict
from opportune.engine.rules import RuleBook
from opportune.engine.scoring import OutcomeScorer
from opportune.settings import Settings
from opportune.store.facts import session_facts
from opportune.store.verdicts import Rejudge
from opportune.store.visits import session_row
from opportune.store.writer import ActionEventRow, GroupCommitWriter, WriteJob
from opportune.workspace import Site, Workspace

log = logging.getLogger(__name__)


class IngestError(Exception):
    """A batch refused whole: HTTP status, a stable code, a message and the field path.

    >>> IngestError(413, "batch_too_long", "101 events in one batch", "$.events").status
    413
    """

    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.path = path


class Ingestor:
    """Turns batches into durable rows; owns the live state and the writer.

    One batch goes through named steps: admit the visitor, bring its journey up to the
    rules in force, identify (read ahead), then per event place → step the rules → record,
    then engage, write, and take the writer's word on identity.
    """

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
        # `is None`, not `or`: an OutcomeScorer with no model yet is empty, so falsy, and
        # the caller's (whose refresh picks up models trained later) must be kept.
        self.rules = rules if rules is not None else RuleBook(Workspace())
        self.scorer = scorer if scorer is not None else OutcomeScorer()
        ws = self.rules.workspace
        self.engager = Engager(ws.engagement, ws.queues)
        self._rule_errors: set[str] = set()
        self.live: LiveStore = (live or MemoryLiveStore)(self.load)
        self.live_now = LiveBoard(
            window_ms=settings.live_window_s * 1000, max_visitors=settings.live_max_visitors
        )
        self._max_age_ms = settings.max_event_age_s * 1000
        self._max_future_ms = settings.max_future_skew_s * 1000
        # Event ids older than this (before now) cannot come back: refused as too old.
        self._id_horizon_ms = self._max_age_ms + self._max_future_ms
        self._sqlite = engine.dialect.name == "sqlite"
        self.history = StoredHistory(
            engine, self.rules, self.scorer, horizon_ms=self._id_horizon_ms + 60_000
        )
        # An import's look-ahead (``prepare_history``): visitors known not stored (their
        # load skips the database), event ids known stored, by visitor.
        self._unseen: set[str] = set()
        self._stored_ahead: dict[str, set[str]] = {}

    async def load(self, visitor_id: str, now_ms: int) -> VisitorLive | None:
        """The loader the live stores call on a miss."""
        if visitor_id in self._unseen:
            self._unseen.discard(visitor_id)
            return None
        if self._sqlite:
            # An indexed SQLite read is a few microseconds of in-process work: cheaper on the
            # loop than the hop to a thread (and no GIL contention with it).
            return self.history.load_visitor(visitor_id, now_ms)
        return await asyncio.to_thread(self.history.load_visitor, visitor_id, now_ms)

    def rebuild_journey(self, visitor_id: str, state: VisitorLive) -> Journey | None:
        """The current visit's journey from the database (rules changed, or none held)."""
        return self.history.rebuild_journey(state)

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._sqlite:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

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
        return await self._judged(batch, site, _Mode(now_ms, now_ms), headers, peer)

    async def ingest_history(
        self,
        batch: Batch,
        site: Site,
        *,
        now_ms: int,
        headers: Mapping[str, str],
        peer: str | None,
    ) -> IngestResult:
        """Take one visitor's past events (in time order) as the live path takes a batch,
        in the historical mode: the original times as given (no ``sentAt`` correction, no
        age limit), an event earlier than the visitor's latest refused as out of order, and
        nothing done that belongs to the moment (offers, webhooks, Live Now)."""
        stored = self._stored_ahead.get(batch.visitor_id)
        if stored and all(ev.id in stored for ev in batch.events):
            # A rerun of lines all stored: nothing to judge, no state to load.
            return _history_result(batch.visitor_id, None, BatchRows(duplicates=len(batch.events)))
        at = min(ev.ts for ev in batch.events)
        return await self._judged(batch, site, _Mode(now_ms, at, history=True), headers, peer)

    async def prepare_history(self, site: Site, batches: list[Batch]) -> set[str]:
        """Before ``ingest_history`` of many visitors: ask the database once which of them
        it holds and which of their events (a rerun), instead of once per visitor. The
        visitors it does not hold."""
        ids: dict[str, list[str]] = {}
        for b in batches:
            ids.setdefault(b.visitor_id, []).extend(ev.id for ev in b.events)
        known, stored = await self._db(self.history.stored_of, site.name, ids)
        # Replaced, not added to: a hint left unused (the visitor was held in memory) must
        # not outlive the window it was true for.
        self._unseen = {vid for vid in ids if vid not in known}
        self._stored_ahead = stored
        return set(self._unseen)

    async def _judged(
        self,
        batch: Batch,
        site: Site,
        mode: _Mode,
        headers: Mapping[str, str],
        peer: str | None,
    ) -> IngestResult:
        if not mode.history and len(batch.events) > self.settings.max_batch_events:
            raise IngestError(
                413,
                "batch_too_long",
                f"{len(batch.events)} events in one batch; at most "
                f"{self.settings.max_batch_events}",
                "$.events",
            )
        bad = unstorable_context(batch.context)
        if bad is not None:
            raise IngestError(
                400,
                "invalid_batch",
                "text the database cannot store (NUL or a lone surrogate)",
                f"$.context.{bad}",
            )
        # The database has the last word on what is new: a batch whose write found some of
        # its events already stored, or an event the database refuses, is judged again
        # (the hold has forgotten the live state, which is reloaded from the database).
        verdict = Verdict()
        while True:
            try:
                async with self.live.hold(batch.visitor_id, mode.at_ms) as slot:
                    return await self._ingest(batch, site, slot, verdict, mode, headers, peer)
            except Rejudge as exc:
                if not verdict.learn(exc):
                    raise

    async def _ingest(
        self,
        batch: Batch,
        site: Site,
        slot: Slot,
        verdict: Verdict,
        mode: _Mode,
        headers: Mapping[str, str],
        peer: str | None,
    ) -> IngestResult:
        now_ms = mode.now_ms
        state = self._admit(batch, site, slot, mode.at_ms)
        if mode.history:
            # A rerun: what ``prepare_history`` found stored (else the writer finds it, and
            # the batch is judged again, as live).
            verdict.stored |= self._stored_ahead.get(batch.visitor_id, set())
        for event_id in verdict.stored:  # committed, as the database said
            state.recent_ids.setdefault(event_id, mode.at_ms)
        await self._bring_journey_current(slot, state)
        customer_before = state.customer_id
        work = BatchRows(last_sid=state.track.session_id)
        if self.rules.ruleset:
            work.linked = await self._identify_ahead(batch, site, state)
        # No await from here to the write: concurrent batches of one visitor (memory store)
        # must not interleave their changes to the state.
        arrival = Arrival(headers, peer, self.geo)
        # Live: the visitor's smoothed skew, not this batch's own (core/client_clock.py).
        skew = 0 if mode.history else state.clock.observe(now_ms - batch.sent_at)
        for i, ev in enumerate(batch.events):
            if i in verdict.refused:
                work.refused.append(Refusal(i, ev.id, verdict.refused[i]))
                continue
            self._event(batch, site, state, work, i, ev, mode=mode, skew=skew, arrival=arrival)
        j = state.journey
        engaged = None
        if (
            not mode.history
            and self.rules.maps
            and work.event_rows
            and j is not None
            and j.session_id == work.last_sid
        ):
            engaged = self._engage(site.name, batch.visitor_id, state, j, now_ms)
        outcomes = await self._write(slot, site, batch.visitor_id, state, work, engaged)
        # Only now, committed, may the ids short-cut a retry as duplicates.
        for row in work.event_rows:
            state.recent_ids[row.event_id] = row.ts
        at = max(mode.at_ms, state.track.last_at) if mode.history else now_ms
        await self._settle_identity(batch, state, work, outcomes, customer_before, at)
        state.prune(at - self._id_horizon_ms)
        if mode.history:
            work.refused.sort(key=lambda r: r.index)
            return _history_result(batch.visitor_id, state, work)
        result = await self._result(batch.visitor_id, state, work, engaged, now_ms)
        self.live_now.note(site.name, batch, state, result, now_ms)  # Live Now: memory only
        return result

    def _admit(self, batch: Batch, site: Site, slot: Slot, now_ms: int) -> VisitorLive:
        """The visitor's live state (a new one for a visitor never seen), of this site."""
        state = slot.state
        if state is None:
            state = slot.create(
                VisitorLive(
                    site_id=site.name,
                    customer_id=None,
                    first_seen_at=now_ms,
                    track=SessionTrack(),
                )
            )
        if state.site_id != site.name:
            raise IngestError(
                409,
                "visitor_of_another_site",
                "this visitor id belongs to another site",
                "$.visitorId",
            )
        return state

    async def _bring_journey_current(self, slot: Slot, state: VisitorLive) -> None:
        """Rebuild the visit's journey if it was built under other rules (or none is held),
        once the visitor's earlier writes are durable."""
        rs = self.rules.ruleset
        j = state.journey
        stale = j is None or not j.is_current(rs.fingerprint)
        if stale and state.track.session_id is not None and rs:
            await slot.settled()
            state.journey = await self._db(self.history.rebuild_journey, state)

    async def _identify_ahead(
        self, batch: Batch, site: Site, state: VisitorLive
    ) -> dict[int, Linked]:
        """The known customers the batch's identify events link to, read before the rules
        step so that its segments see them."""
        if not identify_indexes(batch.events):
            return {}
        linked: dict[int, Linked] = await self._db(
            linked_customers,
            self.engine,
            batch.events,
            site_id=site.name,
            customer_id=state.customer_id,
            default_region=site.default_phone_region,
        )
        return linked

    def _event(
        self,
        batch: Batch,
        site: Site,
        state: VisitorLive,
        work: BatchRows,
        i: int,
        ev: Event,
        *,
        mode: _Mode,
        skew: int,
        arrival: Arrival,
    ) -> None:
        """One event: checked, de-duplicated, placed, stepped through the rules, recorded."""
        now_ms = mode.now_ms
        refusal = check_event(
            ev,
            index=i,
            now_ms=now_ms,
            skew_ms=skew,
            # History has no age limit: anything since the schema's earliest time.
            max_age_ms=now_ms if mode.history else self._max_age_ms,
            max_future_ms=self._max_future_ms,
        )
        if refusal is not None:
            work.refused.append(refusal)
            return
        if ev.id in state.recent_ids or ev.id in work.ids:
            work.duplicates += 1
            return
        if mode.history:
            ts = ev.ts
            if ts < state.track.last_at:
                work.refused.append(Refusal(i, ev.id, _out_of_order(state.track.last_at)))
                return
        else:
            ts = state.clock.order(seq=ev.seq, ts=ev.ts + skew)
        work.ids.add(ev.id)
        sid, row, landed = self._place(batch, site, state, work, ev, ts, arrival)
        rs = self.rules.ruleset
        if sid == state.track.session_id and (rs or len(self.scorer)):
            j = self._journey_for(state, sid, row)
            if landed:
                j.facts.update(session_facts(row))
            if i in work.linked:
                self._see_customer(state, work, j, work.linked[i])
            self._step(site, batch.visitor_id, state, work, j, ev, ts)
        work.add_event(
            ev,
            site=site,
            visitor_id=batch.visitor_id,
            index=i,
            ts=ts,
            session_id=sid,
            # History is as if each event had been received at its time: training reads
            # visits in that order, and a customer linked by one is linked then.
            now_ms=ts if mode.history else now_ms,
        )

    def _place(
        self,
        batch: Batch,
        site: Site,
        state: VisitorLive,
        work: BatchRows,
        ev: Event,
        ts: int,
        arrival: Arrival,
    ) -> tuple[str, dict[str, Any], bool]:
        """The event's visit, its row (started if new) and whether the event landed it."""
        vid = batch.visitor_id
        sid, new = place(state.track, vid, ts, site.session_timeout_minutes * 60_000)
        work.last_sid = sid
        row = work.session_rows.get(sid)
        if row is None:
            row = work.session_rows[sid] = _session_row(sid, site.name, vid, state.customer_id, ts)
        if new:
            start_visit(
                row, number=state.track.number, ts=ts, arrival=arrival, context=batch.context
            )
        return sid, row, count_event(row, ev, ts, new=new)

    def _journey_for(self, state: VisitorLive, sid: str, row: dict[str, Any]) -> Journey:
        """The journey of visit ``sid``: the one held, or a new one when a visit starts
        (the visit before then ends, and its outcomes become the visitor's history)."""
        j = state.journey
        if j is not None and j.session_id == sid:
            return j
        if j is not None:
            state.past_outcomes = past_outcomes_after(state.past_outcomes, j)
        j = state.journey = Journey(
            session_id=sid,
            started_at=state.track.started_at,
            facts=session_facts(row),
            visit_number=state.track.number,
            previous_visit_at=state.track.previous_last_at,
            past_outcomes=dict(state.past_outcomes),
            rules=self.rules.ruleset.fingerprint,
        )
        if state.customer_id:
            j.facts["identified"] = True
        return j

    def _see_customer(
        self, state: VisitorLive, work: BatchRows, j: Journey, linked: Linked
    ) -> None:
        """Let the rules see the customer this event identifies: its stored traits under
        the visit's own. (Its assignments from other devices join after the write, as the
        training replay has them: ml/examples.py.)"""
        j.traits = {**linked.traits, **j.traits}
        j.facts["identified"] = True

    def _step(
        self,
        site: Site,
        vid: str,
        state: VisitorLive,
        work: BatchRows,
        j: Journey,
        ev: Event,
        ts: int,
    ) -> None:
        """Fold the event into the journey and keep the facts the rules changed."""
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
        scorer = self.scorer if len(self.scorer) else None
        changes = self.rules.ruleset.step(j, jev, at, state.assignments, scorer)
        if not changes:
            return
        work.add_changes(
            changes,
            site_id=site.name,
            session_id=j.session_id,
            visitor_id=vid,
            customer_id=state.customer_id,
            at=at,
            event_id=ev.id,
        )
        for name, message in changes.errors:
            if name not in self._rule_errors:  # once per rule, not per event
                self._rule_errors.add(name)
                log.error("rule %r failed and counts as not matched: %s", name, message)

    async def _write(
        self,
        slot: Slot,
        site: Site,
        vid: str,
        state: VisitorLive,
        work: BatchRows,
        engaged: Outcome | None,
    ) -> list[Any]:
        """Submit the batch's rows as one job and wait for its commit; identify outcomes."""
        job = work.job(BatchRows.visitor_row(vid, site.name, state), engaged=engaged)
        if job.events:
            return await self._submit(slot, state, job)
        if work.duplicates:
            # Answer "duplicate" only once the original is durable.
            await slot.settled()
        return []

    async def _submit(self, slot: Slot, state: VisitorLive, job: WriteJob) -> list[Any]:
        """Write ``job`` from the visitor's version the state was read at, and wait for the
        commit; the state then includes it. If another writer's commit for the visitor came
        first (``Superseded``), or the write fails, the store forgets the state (see
        ``LiveStore.hold``) and the batch is judged again on the stored truth."""
        job.version = state.version
        job.future = slot.write = asyncio.get_running_loop().create_future()
        outcomes: list[Any] = await self.writer.submit(job)
        state.version += 1
        return outcomes

    async def _settle_identity(
        self,
        batch: Batch,
        state: VisitorLive,
        work: BatchRows,
        outcomes: list[Any],
        customer_before: str | None,
        now_ms: int,
    ) -> None:
        """The writer's word on identity: the customer now in force and refused identifiers."""
        for op, outcome in zip(work.identifies, outcomes, strict=True):
            if outcome.customer_id is not None:
                state.customer_id = outcome.customer_id
            for reason in outcome.refusals:
                work.refused.append(
                    Refusal(op.event_index, batch.events[op.event_index].id, reason)
                )
        if state.customer_id is None or state.customer_id == customer_before:
            return
        if self.rules.ruleset:
            # Newly identified: the customer's assignments from its other devices apply here.
            more = await self._db(
                self.history.assignments_of, batch.visitor_id, state.customer_id, now_ms
            )
            merge_assignments(state.assignments, more)
        if state.journey is not None:
            state.journey.facts["identified"] = True

    async def _result(
        self,
        vid: str,
        state: VisitorLive,
        work: BatchRows,
        engaged: Outcome | None,
        now_ms: int,
    ) -> IngestResult:
        work.refused.sort(key=lambda r: r.index)
        j = state.journey
        current = j if j is not None and j.session_id == state.track.session_id else None
        at = current.last_at if current is not None else now_ms
        return IngestResult(
            accepted=len(work.event_rows),
            duplicates=work.duplicates,
            refused=work.refused,
            visitor_id=vid,
            session_id=work.last_sid,
            customer_id=state.customer_id,
            visit_number=state.track.number,
            segments=list(self.rules.ruleset.members(current, state.assignments, at)),
            outcomes=list(current.outcomes) if current is not None else [],
            scores={n: s.to_json() for n, s in current.scores.items()}
            if current is not None
            else {},
            actions=await self._actions(engaged, state) if engaged else [],
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
                if not j.is_current(self.rules.ruleset.fingerprint):
                    await slot.settled()
                    j = state.journey = await self._db(self.history.rebuild_journey, state)
                if j is not None:
                    engaged = self._engage(site.name, req.visitor_id, state, j, now_ms)
            if engaged and (engaged.action_rows or engaged.webhook_rows):
                job = WriteJob(
                    visitor=BatchRows.visitor_row(req.visitor_id, site.name, state),
                    sessions=[],
                    events=[],
                    action_events=engaged.action_rows,
                    webhooks=engaged.webhook_rows,
                )
                await self._submit(slot, state, job)
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
                    ActionEventRow(
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
                job = WriteJob(
                    visitor=BatchRows.visitor_row(batch.visitor_id, site.name, state),
                    sessions=[],
                    events=[],
                    action_events=rows,
                )
                await self._submit(slot, state, job)
            return {"accepted": len(rows), "refused": refused}


class _Mode(NamedTuple):
    """How a batch is taken. Live: ``now_ms`` is the moment and the batch's events are
    corrected to it. History: events keep their times; ``at_ms`` is the batch's first."""

    now_ms: int
    at_ms: int
    history: bool = False


def _out_of_order(latest_ms: int) -> str:
    at = datetime.fromtimestamp(latest_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return (
        f"out of order: earlier than this visitor's event at {at.replace('+00:00', 'Z')} "
        "already imported or stored; a visitor's events go in in time order (sort the file "
        "by time, or by visitor and time)"
    )


def _history_result(vid: str, state: VisitorLive | None, work: BatchRows) -> IngestResult:
    """What an import needs to know of a batch: its counts and refusals."""
    return IngestResult(
        accepted=len(work.event_rows),
        duplicates=work.duplicates,
        refused=work.refused,
        visitor_id=vid,
        session_id=work.last_sid,
        customer_id=state.customer_id if state is not None else None,
        visit_number=state.track.number if state is not None else 0,
        segments=[],
        outcomes=[],
        scores={},
        actions=[],
        recheck_in_ms=None,
    )


def _session_row(sid: str, site_id: str, vid: str, customer_id: str | None, ts: int) -> dict:
    return session_row(
        session_id=sid, site_id=site_id, visitor_id=vid, customer_id=customer_id, ts=ts
    )
