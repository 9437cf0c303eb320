"""Past visits as training sees them: what the live pipeline knew when each visit began.

A :class:`Visit` holds exactly what :mod:`opportune.engine.ingest` puts into a new
:class:`~opportune.core.journey.Journey` (session facts, visit number, end of the previous
visit, outcomes of earlier visits, customer-scope assignments in force) and the visit's
events on the server clock, in the order the pipeline processed them. Two sources build
them: the database (:func:`stored_visits`, for training in production) and the web
simulator (:class:`SimHistory`, for the bench), each following the engine's rules so that
replaying a visit reproduces the live state event by event.

What the database cannot give back is said where it matters: identify events are stored
without their trait values, so a segment on traits replays as if none were sent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.engine import Connection

from opportune.core.journey import Journey, JourneyEvent, Scalar
from opportune.core.session import landing_attributes, session_id_for
from opportune.engine.enrichment import parse_user_agent
from opportune.sim.web import SimSession
from opportune.store.facts import journey_event, session_facts
from opportune.store.schema import (
    events,
    identity_log,
    outcome_achievements,
    segment_changes,
    sessions,
)
from opportune.store.schema import visitors as visitors_t

# Identity-log kinds that link a visitor to a customer (when it became "identified").
_LINKS = ("link", "switch")
_EVENT_COLS = (
    events.c.type,
    events.c.ts,
    events.c.url,
    events.c.name,
    events.c.query,
    events.c.data,
    events.c.event_id,
)


@dataclass(slots=True)
class Visit:
    """One past visit, as the pipeline saw it begin, and its events in processing order."""

    session_id: str
    visitor_id: str
    started_at: int
    visit_number: int
    facts: dict[str, Scalar]
    previous_visit_at: int
    past_outcomes: dict[str, int]
    assignments: dict[str, list[int]]  # customer-scope segment -> [since, expires at]
    events: list[JourneyEvent]
    # (event index, assignments): merged in before that event is processed — the visitor
    # was identified in this visit and its customer's other devices' assignments join.
    merges: list[tuple[int, dict[str, list[int]]]] = field(default_factory=list)
    email: str | None = None  # simulator only: the customer's email once identified

    def journey(self, rules_fingerprint: str) -> Journey:
        """A fresh journey for this visit, built as the engine builds one."""
        return Journey(
            session_id=self.session_id,
            started_at=self.started_at,
            facts=dict(self.facts),
            visit_number=self.visit_number,
            previous_visit_at=self.previous_visit_at,
            past_outcomes=dict(self.past_outcomes),
            rules=rules_fingerprint,
        )


@dataclass(frozen=True, slots=True)
class HistoryCounts:
    """How much finished history a window holds: visits, and achievements per outcome."""

    sessions: int
    achievements: dict[str, int]
    first_at: int | None
    last_at: int | None


def history_counts(conn: Connection, *, since_ms: int, until_ms: int) -> HistoryCounts:
    """Visits that started at or after ``since_ms`` and ended before ``until_ms``, and the
    outcomes they achieved (the readiness rule counts these)."""
    window = and_(sessions.c.started_at >= since_ms, sessions.c.last_event_at < until_ms)
    n, first, last = conn.execute(
        select(func.count(), func.min(sessions.c.started_at), func.max(sessions.c.started_at))
        .select_from(sessions)
        .where(window)
    ).one()
    rows = conn.execute(
        select(outcome_achievements.c.outcome, func.count())
        .select_from(
            outcome_achievements.join(sessions, sessions.c.id == outcome_achievements.c.session_id)
        )
        .where(window)
        .group_by(outcome_achievements.c.outcome)
    ).all()
    return HistoryCounts(int(n or 0), {o: int(c) for o, c in rows}, first, last)


def _fold_assignments(
    rows: Iterable[tuple[int, str, int]], upto_ms: int, *, inclusive: bool
) -> dict[str, list[int]]:
    """Customer-scope assignments in force at ``upto_ms``, folded as
    ``store.facts.active_assignments`` folds them from the ``assigned`` rows written by then
    (``rows``: (at, segment, expires at) in time order)."""
    out: dict[str, list[int]] = {}
    for at, seg, expires in rows:
        if at > upto_ms or (at == upto_ms and not inclusive):
            break
        prior = out.get(seg)
        since = prior[0] if prior is not None and prior[1] > at else at
        out[seg] = [since, max(expires, prior[1] if prior else 0)]
    return {k: v for k, v in out.items() if v[1] > upto_ms}


def merge_assignments(mine: dict[str, list[int]], more: Mapping[str, list[int]]) -> None:
    """The engine's merge when a visitor is newly identified: its customer's assignments
    from other devices join its own (in place)."""
    for name, (since, expires) in more.items():
        have = mine.get(name)
        if have is None or have[1] < expires:
            mine[name] = [min(since, have[0]) if have else since, expires]


def stored_visits(
    conn: Connection,
    *,
    since_ms: int,
    until_ms: int,
    site_id: str | None = None,
    limit: int | None = None,
    partition: tuple[int, int] = (0, 1),
) -> Iterator[Visit]:
    """Finished visits started in ``[since_ms, …)`` and ended before ``until_ms``, oldest
    first, each with the state the pipeline had when it began.

    - the session facts are the stored session row's; ``identified`` only when the visitor
      was linked to a customer before the visit began (from the identity log: a link fills
      in ``customer_id`` on all the visitor's earlier sessions too, which must not leak
      back into them);
    - the previous visit's end, the outcomes of earlier visits and the customer-scope
      assignments written before the visit began are read as of that moment; a visitor
      linked during the visit gets its customer's assignments from the next batch on, as
      the engine merges them after the identifying batch;
    - events come in the order the pipeline processed them (see below).

    A few whole-window queries, then one primary-key range per visit for its events.
    ``partition=(k, n)`` yields only every n-th visit from the k-th (for n workers: each
    visit is read in full from the database, so any split of them is independent).
    """
    part, parts = partition
    window = and_(sessions.c.started_at >= since_ms, sessions.c.last_event_at < until_ms)
    if site_id:
        window = and_(window, sessions.c.site_id == site_id)
    q = select(sessions).where(window).order_by(sessions.c.started_at, sessions.c.id)
    if limit:
        q = q.limit(limit)
    rows = conn.execute(q).all()[part::parts]
    if not rows:
        return
    visitors = sorted({r.visitor_id for r in rows})
    by_visitor: dict[str, dict[int, int]] = defaultdict(dict)
    achieved: dict[str, list[tuple[int, str]]] = defaultdict(list)
    linked_at: dict[str, int] = {}
    for chunk in _chunks(visitors, 500):
        for vid, number, last_at in conn.execute(
            select(sessions.c.visitor_id, sessions.c.number, sessions.c.last_event_at).where(
                sessions.c.visitor_id.in_(chunk)
            )
        ):
            by_visitor[vid][number] = last_at
        for vid, outcome, started in conn.execute(
            select(
                outcome_achievements.c.visitor_id,
                outcome_achievements.c.outcome,
                sessions.c.started_at,
            )
            .select_from(
                outcome_achievements.join(
                    sessions, sessions.c.id == outcome_achievements.c.session_id
                )
            )
            .where(outcome_achievements.c.visitor_id.in_(chunk))
        ):
            achieved[vid].append((started, outcome))
        for vid, at in conn.execute(
            select(identity_log.c.visitor_id, func.min(identity_log.c.at))
            .where(identity_log.c.visitor_id.in_(chunk), identity_log.c.kind.in_(_LINKS))
            .group_by(identity_log.c.visitor_id)
        ):
            linked_at[vid] = int(at)
    pools = _assignment_pools(
        conn, visitors, sorted({r.customer_id for r in rows if r.customer_id})
    )
    stmt = (
        select(*_EVENT_COLS, events.c.received_at)
        .where(
            events.c.visitor_id == bindparam("vid"),
            events.c.ts >= bindparam("start"),
            events.c.ts <= bindparam("end"),
            events.c.session_id == bindparam("sid"),
        )
        # The order the pipeline processed them in: batch by batch as they arrived, each in
        # its own order. By ``ts`` would differ: each batch's clock-skew correction differs
        # by its latency, so events a few ms apart in two batches can swap.
        .order_by(events.c.received_at, events.c.seq, events.c.ts)
    )
    for srow in rows:
        vid, start = srow.visitor_id, srow.started_at
        found = conn.execute(
            stmt, {"vid": vid, "start": start, "end": srow.last_event_at, "sid": srow.id}
        ).all()
        if not found:
            continue
        link = linked_at.get(vid)
        known = link is not None and link < start
        own = pools.get("v:" + vid, [])
        cust = pools.get("c:" + srow.customer_id, []) if srow.customer_id else []
        both = sorted({*own, *cust})
        assignments = _fold_assignments(
            ((a, seg, e) for a, seg, e, _ in (both if known else own)), start, inclusive=False
        )
        merges: list[tuple[int, dict[str, list[int]]]] = []
        if link is not None and not known and cust:
            # Linked in this visit: the engine merges the customer's assignments once the
            # identifying batch is written, so they apply from the next batch on.
            at = next((i for i, r in enumerate(found) if r.received_at > link), None)
            if at is not None:
                more = _fold_assignments(((a, g, e) for a, g, e, _ in both), link, inclusive=True)
                merges.append((at, more))
        past: dict[str, int] = {}
        for started, outcome in achieved[vid]:
            if started < start:
                past[outcome] = past.get(outcome, 0) + 1
        facts: dict[str, Scalar] = session_facts(srow._mapping)
        if known:
            facts["identified"] = True
        yield Visit(
            session_id=srow.id,
            visitor_id=vid,
            started_at=start,
            visit_number=srow.number,
            facts=facts,
            previous_visit_at=by_visitor[vid].get(srow.number - 1, 0),
            past_outcomes=past,
            assignments=assignments,
            events=[journey_event(r) for r in found],
            merges=merges,
        )


def _assignment_pools(
    conn: Connection, visitors: Sequence[str], customers: Sequence[str]
) -> dict[str, list[tuple[int, str, int, int]]]:
    """Every ``assigned`` row, as (at, segment, expires at, row id) in time order, of each
    visitor (``v:<id>``) and of each customer (``c:<id>``: rows that name the customer or
    come from any of its visitors, as ``active_assignments`` reads them)."""
    visitors_of: dict[str, set[str]] = defaultdict(set)
    for chunk in _chunks(customers, 500):
        for vid, cid in conn.execute(
            select(visitors_t.c.id, visitors_t.c.customer_id).where(
                visitors_t.c.customer_id.in_(chunk)
            )
        ):
            visitors_of[cid].add(vid)
    everyone = sorted({*visitors, *(v for vs in visitors_of.values() for v in vs)})
    by_visitor: dict[str, list[tuple[int, str, int, int]]] = defaultdict(list)
    by_customer: dict[str, list[tuple[int, str, int, int]]] = defaultdict(list)
    cols = (
        segment_changes.c.visitor_id,
        segment_changes.c.customer_id,
        segment_changes.c.segment,
        segment_changes.c.at,
        segment_changes.c.expires_at,
        segment_changes.c.id,
    )
    assigned = segment_changes.c.change == "assigned"
    for key, keys in (
        (segment_changes.c.visitor_id, everyone),
        (segment_changes.c.customer_id, customers),
    ):
        for chunk in _chunks(keys, 500):
            for vid, cid, seg, at, expires, rid in conn.execute(
                select(*cols).where(assigned, key.in_(chunk))
            ):
                row = (int(at), seg, int(expires or 0), int(rid))
                by_visitor[vid].append(row)
                if cid:
                    by_customer[cid].append(row)
    pools: dict[str, list[tuple[int, str, int, int]]] = {}
    for vid in visitors:
        pools["v:" + vid] = sorted(set(by_visitor.get(vid, ())))
    for cid in customers:
        rows = set(by_customer.get(cid, ()))
        for vid in visitors_of.get(cid, ()):
            rows.update(by_visitor.get(vid, ()))
        pools["c:" + cid] = sorted(rows)
    return pools


def stored_visit_count(
    conn: Connection, *, since_ms: int, until_ms: int, site_id: str | None = None
) -> int:
    """How many visits :func:`stored_visits` would yield at most (for progress bars)."""
    cond = and_(sessions.c.started_at >= since_ms, sessions.c.last_event_at < until_ms)
    if site_id:
        cond = and_(cond, sessions.c.site_id == site_id)
    return int(conn.execute(select(func.count()).select_from(sessions).where(cond)).scalar() or 0)


def _chunks(items: Sequence[str], n: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


# ---- the simulator as a source ---------------------------------------------------------


@dataclass(slots=True)
class _Known:
    """What the pipeline's live state keeps of one simulated visitor between visits."""

    email: str | None = None  # the customer it is linked to (None: anonymous)
    last_at: int = 0
    past: dict[str, int] = field(default_factory=dict)
    assignments: dict[str, list[int]] = field(default_factory=dict)


class SimHistory:
    """Simulated sessions turned into :class:`Visit` s exactly as the engine ingests them
    and :func:`stored_visits` reads them back.

    Per batch the server clock is the arrival time and the skew correction is the
    engine's (``ts + received - sentAt``); the session row gets the user agent's device,
    the batch context's locale and time zone and the landing page's UTM and referrer (no
    geo: the simulator sends no geo headers); identify events carry their traits, as the
    live pipeline folds them. What a visitor carries to its next visit (identified or not,
    the end of the visit, outcomes achieved, customer-scope assignments — its own and, once
    identified, its customer's from other devices) comes back from the replay through
    :meth:`settle`.

    ``keep_truth`` stores each session's exact outcome probabilities (the oracle) by
    session id in :attr:`truth`.
    """

    def __init__(self, *, keep_truth: bool = False) -> None:
        self._known: dict[str, _Known] = {}
        self._customers: dict[str, dict[str, list[int]]] = {}  # email -> assignments
        self.keep_truth = keep_truth
        self.truth: dict[str, np.ndarray] = {}
        self.achieved_truth: dict[str, dict[str, int]] = {}

    def visits(self, sessions_in_start_order: Iterable[SimSession]) -> Iterator[Visit]:
        """The sessions as visits; call :meth:`settle` after each before taking the next."""
        for s in sessions_in_start_order:
            yield self.visit(s)

    def _pool(self, email: str, now: int) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self._customers.get(email, {}).items() if v[1] > now}

    def visit(self, s: SimSession) -> Visit:
        """One simulated session as the pipeline would have begun and processed it."""
        known = self._known.setdefault(s.visitor_id, _Known())
        evs: list[JourneyEvent] = []
        merges: list[tuple[int, dict[str, list[int]]]] = []
        link_at: int | None = None
        for b, received in zip(s.batches, s.received_ms, strict=True):
            if link_at is not None:  # merged once the identifying batch is written
                assert s.email is not None
                merges.append((len(evs), self._pool(s.email, link_at)))
                link_at = None
            skew = received - b.sent_at
            for ev in b.events:
                evs.append(
                    JourneyEvent(
                        ev.type,
                        ev.ts + skew,
                        ev.url,
                        ev.name,
                        ev.query,
                        ev.traits if ev.type == "identify" else ev.attributes,
                        ev.id,
                    )
                )
                if ev.type == "identify" and known.email is None and not merges:
                    link_at = received
        device = parse_user_agent(s.user_agent[:512])
        ctx = s.batches[0].context
        row: dict[str, Any] = {
            "device_type": device.device_type,
            "browser": device.browser and device.browser[:64],
            "os": device.os and device.os[:64],
            "country": None,
            "region": None,
            "city": None,
            "locale": ctx.locale,
            "timezone": ctx.timezone,
            "landing_url": None,
            "referrer": None,
            "referrer_domain": None,
            "utm_source": None,
            "utm_medium": None,
            "utm_campaign": None,
            "utm_term": None,
            "utm_content": None,
        }
        # The engine takes the landing facts from the first page view of the visit's
        # first batch (the batch in which the session starts).
        first = next((e for e in s.batches[0].events if e.type == "page_view"), None)
        if first is not None:
            row.update(landing_attributes(first.url, first.referrer))
        facts: dict[str, Scalar] = session_facts(row)
        assignments = {k: list(v) for k, v in known.assignments.items()}
        if known.email is not None:
            facts["identified"] = True
            merge_assignments(assignments, self._pool(known.email, evs[0].ts))
        sid = session_id_for(s.visitor_id, s.visit_number)
        if self.keep_truth:
            self.truth[sid] = s.probabilities
            self.achieved_truth[sid] = dict(s.achieved_at)
        return Visit(
            session_id=sid,
            visitor_id=s.visitor_id,
            started_at=evs[0].ts,
            visit_number=s.visit_number,
            facts=facts,
            previous_visit_at=known.last_at,
            past_outcomes=dict(known.past),
            assignments=assignments,
            events=evs,
            merges=merges,
            email=s.email if any(e.type == "identify" for e in evs) else known.email,
        )

    def settle(
        self, visit: Visit, achieved: Sequence[str], assignments: dict[str, list[int]]
    ) -> None:
        """What the visitor's live state keeps after ``visit``: called by the replay."""
        known = self._known.setdefault(visit.visitor_id, _Known())
        known.last_at = max(e.ts for e in visit.events)
        known.email = known.email or visit.email
        for name in achieved:
            known.past[name] = known.past.get(name, 0) + 1
        known.assignments = {k: list(v) for k, v in assignments.items()}
        if known.email is not None:
            merge_assignments(self._customers.setdefault(known.email, {}), assignments)


__all__ = [
    "HistoryCounts",
    "SimHistory",
    "Visit",
    "history_counts",
    "merge_assignments",
    "stored_visit_count",
    "stored_visits",
]
