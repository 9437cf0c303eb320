"""Past visits read back from the database for training, each with the state the live
pipeline had when it began; and the one builder of a session row, for the pipeline that
writes it and for every history that rebuilds one.

What the database cannot give back is said where it matters: identify events are stored
without their trait values, so a segment on traits replays as if none were sent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, and_, bindparam, func, select
from sqlalchemy.engine import Connection, Row

from opportune.core.assignments import fold_assignments
from opportune.core.journey import Scalar
from opportune.core.session import landing_attributes
from opportune.ml.outcomes.visits import HistoryCounts, Settle, Visit, VisitSource
from opportune.store.db import make_engine
from opportune.store.facts import EVENT_COLUMNS, journey_event, session_facts
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
# An assigned row as the pools keep it: (at, segment, expires at, row id).
_Assigned = tuple[int, str, int, int]


def session_row(
    *,
    session_id: str,
    site_id: str,
    visitor_id: str,
    customer_id: str | None,
    ts: int,
    number: int = 0,
    device: Any = None,
    geo: Any = None,
    locale: str | None = None,
    timezone: str | None = None,
    landing: tuple[str | None, str | None] | None = None,
) -> dict[str, Any]:
    """The ``sessions`` row of a visit that begins at ``ts``: its columns, with what is
    known of it so far — the user agent's ``device``, the ``geo`` of its address, the
    batch context's locale and time zone, and the ``landing`` page's (url, referrer) UTM
    and referrer facts. The live pipeline and every rebuilt history build rows here, so
    that the facts a model learns from are the facts it is served.

    >>> row = session_row(session_id="s", site_id="demo", visitor_id="v", customer_id=None,
    ...                   ts=5, landing=("https://s.com/?utm_source=news", None))
    >>> row["utm_source"], row["device_type"], row["started_at"]
    ('news', None, 5)
    """
    row: dict[str, Any] = {
        "id": session_id,
        "site_id": site_id,
        "visitor_id": visitor_id,
        "customer_id": customer_id,
        "number": number,
        "started_at": ts,
        "last_event_at": ts,
        "event_count": 0,
        "page_count": 0,
        "landing_url": None,
        "referrer": None,
        "referrer_domain": None,
        "utm_source": None,
        "utm_medium": None,
        "utm_campaign": None,
        "utm_term": None,
        "utm_content": None,
        "device_type": None,
        "browser": None,
        "os": None,
        "country": None,
        "region": None,
        "city": None,
        "locale": locale,
        "timezone": timezone,
    }
    if device is not None:
        row.update(
            device_type=device.device_type,
            browser=device.browser and device.browser[:64],
            os=device.os and device.os[:64],
        )
    if geo is not None:
        row.update(
            country=geo.country,
            region=geo.region and geo.region[:64],
            city=geo.city and geo.city[:128],
        )
    if landing is not None:
        row.update(landing_attributes(*landing))
    return row


def _window(since_ms: int, until_ms: int, site_id: str | None) -> Any:
    cond = and_(sessions.c.started_at >= since_ms, sessions.c.last_event_at < until_ms)
    return and_(cond, sessions.c.site_id == site_id) if site_id else cond


def history_counts(conn: Connection, *, since_ms: int, until_ms: int) -> HistoryCounts:
    """Visits that started at or after ``since_ms`` and ended before ``until_ms``, and the
    outcomes they achieved (the readiness rule counts these)."""
    window = _window(since_ms, until_ms, None)
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


@dataclass(slots=True)
class _Visitors:
    """What the window's visitors carried between visits: each visit's end by number,
    the outcomes achieved (visit start, outcome) and when each was first linked."""

    last_at: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    achieved: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    linked_at: dict[str, int] = field(default_factory=dict)


def _visitors(conn: Connection, visitors: Sequence[str]) -> _Visitors:
    out = _Visitors()
    for chunk in _chunks(visitors, 500):
        for vid, number, last_at in conn.execute(
            select(sessions.c.visitor_id, sessions.c.number, sessions.c.last_event_at).where(
                sessions.c.visitor_id.in_(chunk)
            )
        ):
            out.last_at[vid][number] = last_at
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
            out.achieved[vid].append((started, outcome))
        for vid, at in conn.execute(
            select(identity_log.c.visitor_id, func.min(identity_log.c.at))
            .where(identity_log.c.visitor_id.in_(chunk), identity_log.c.kind.in_(_LINKS))
            .group_by(identity_log.c.visitor_id)
        ):
            out.linked_at[vid] = int(at)
    return out


def _rows(pool: Iterable[_Assigned]) -> Iterator[tuple[int, str, int]]:
    return ((at, seg, expires) for at, seg, expires, _ in pool)


def _visit(
    srow: Row[Any],
    found: Sequence[Row[Any]],
    known: _Visitors,
    pools: dict[str, list[_Assigned]],
) -> Visit:
    """One stored visit with the state the pipeline had when it began (see
    :func:`stored_visits`)."""
    vid, start = srow.visitor_id, srow.started_at
    link = known.linked_at.get(vid)
    identified = link is not None and link < start
    own = pools.get("v:" + vid, [])
    cust = pools.get("c:" + srow.customer_id, []) if srow.customer_id else []
    both = sorted({*own, *cust})
    assignments = fold_assignments(_rows(both if identified else own), start, written="before now")
    merges: list[tuple[int, dict[str, list[int]]]] = []
    if link is not None and not identified and cust:
        # Linked in this visit: the engine merges the customer's assignments once the
        # identifying batch is written, so they apply from the next batch on.
        at = next((i for i, r in enumerate(found) if r.received_at > link), None)
        if at is not None:
            merges.append((at, fold_assignments(_rows(both), link, written="by now")))
    past: dict[str, int] = {}
    for started, outcome in known.achieved[vid]:
        if started < start:
            past[outcome] = past.get(outcome, 0) + 1
    facts: dict[str, Scalar] = session_facts(srow._mapping)
    if identified:
        facts["identified"] = True
    return Visit(
        session_id=srow.id,
        visitor_id=vid,
        started_at=start,
        visit_number=srow.number,
        facts=facts,
        previous_visit_at=known.last_at[vid].get(srow.number - 1, 0),
        past_outcomes=past,
        assignments=assignments,
        events=[journey_event(r) for r in found],
        merges=merges,
    )


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
    q = (
        select(sessions)
        .where(_window(since_ms, until_ms, site_id))
        .order_by(sessions.c.started_at, sessions.c.id)
    )
    if limit:
        q = q.limit(limit)
    rows = conn.execute(q).all()[part::parts]
    if not rows:
        return
    visitors = sorted({r.visitor_id for r in rows})
    known = _visitors(conn, visitors)
    pools = _assignment_pools(
        conn, visitors, sorted({r.customer_id for r in rows if r.customer_id})
    )
    stmt = (
        select(*EVENT_COLUMNS, events.c.received_at)
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
        found = conn.execute(
            stmt,
            {
                "vid": srow.visitor_id,
                "start": srow.started_at,
                "end": srow.last_event_at,
                "sid": srow.id,
            },
        ).all()
        if found:
            yield _visit(srow, found, known, pools)


def _assignment_pools(
    conn: Connection, visitors: Sequence[str], customers: Sequence[str]
) -> dict[str, list[_Assigned]]:
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
    by_visitor: dict[str, list[_Assigned]] = defaultdict(list)
    by_customer: dict[str, list[_Assigned]] = defaultdict(list)
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
    pools: dict[str, list[_Assigned]] = {}
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
    cond = _window(since_ms, until_ms, site_id)
    return int(conn.execute(select(func.count()).select_from(sessions).where(cond)).scalar() or 0)


def _chunks(items: Sequence[str], n: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class StoredVisits:
    """The database as training's :class:`~opportune.ml.outcomes.visits.VisitHistory`.

    With several workers each opens its own connection and reads its share."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def counts(self, *, since_ms: int, until_ms: int) -> HistoryCounts:
        with self.engine.connect() as conn:
            return history_counts(conn, since_ms=since_ms, until_ms=until_ms)

    def visit_count(self, *, since_ms: int, until_ms: int, site_id: str | None = None) -> int:
        with self.engine.connect() as conn:
            return stored_visit_count(conn, since_ms=since_ms, until_ms=until_ms, site_id=site_id)

    def source(self, *, since_ms: int, until_ms: int, site_id: str | None = None) -> VisitSource:
        engine = self.engine
        url = engine.url.render_as_string(hide_password=False)

        def visits(k: int, n: int) -> Iterator[Visit]:
            eng = engine if n == 1 else make_engine(url)
            try:
                with eng.connect() as conn:
                    yield from stored_visits(
                        conn,
                        since_ms=since_ms,
                        until_ms=until_ms,
                        site_id=site_id,
                        partition=(k, n),
                    )
            finally:
                if eng is not engine:
                    eng.dispose()

        def source(k: int, n: int) -> tuple[Iterable[Visit], Settle | None]:
            return visits(k, n), None

        return source
