"""The reports' rollups: counts per site, UTC quarter hour, metric and key values, recounted
from the raw tables for the quarters that changed.

A quarter's rows are only ever a *recount* of that quarter from the raw tables, written in
one transaction that first deletes the quarter's old rows: a pass is idempotent, a pass
interrupted half-way leaves whole quarters, and the same code rebuilds everything
(``rebuild``; ``opportune reports rebuild``). A pass finds the quarters to recount from
what was received since the last pass (``touched``): the visits that got events
(``events.received_at``, read through the ``ts`` index, since an event older than the
acceptance window is refused) or action events (``action_events.id``); every quarter
such a visit spans is recounted, because a visit's later rows can change a figure kept in
an earlier quarter (its page views, the first time it reached a segment). Segment changes
and outcomes are written in the transaction of the events that caused them, so their
visits are among those.

Counts that are "distinct visits" are kept at the visit's **first** row of that kind (its
first view of a URL, its first entry into a segment, the first time an instance had a
state): per quarter they add up over any range of quarters. Metrics and their keys:

========================  ====================================  ==========================
metric                    keys                                  n (x)
========================  ====================================  ==========================
``visits``                new | returning                       visits started (page views)
``devices`` ``browsers``  device type, browser                  visits started
``referrers``             referring domain                      visits started
``campaigns``             utm campaign, source, medium          visits started
``page_views``            URL                                   page_view events
``page_visits``           URL                                   visits' first views of it
``segment_entries``       segment                               entries (entered, assigned)
``segment_visits``        segment                               visits' first entries
``conversions``           segment, outcome                      first entries later converted
``outcomes``              outcome                               achievements (value)
``actions``               map, state                            action events
``action_visits``         map, state                            instances' first such state
``blocks``                map, reason                           blocked action events
``block_visits``          map, reason                           visits' first such block
``arm_wins``              map, offered | holdout, outcome       first decisions later won
========================  ====================================  ==========================

>>> quarters_of(1_800_000, 3_600_000)
range(2, 4)
>>> runs({7, 3, 4, 5, 9})
[(3, 6), (7, 8), (9, 10)]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    Engine,
    Float,
    String,
    Text,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Select

from opportune.store.schema import (
    action_events,
    events,
    outcome_achievements,
    report_rollup_marks,
    report_rollups,
    report_rollups_daily,
    segment_changes,
    sessions,
)

QUARTER_MS: Final = 900_000
PER_DAY: Final = 96  # quarter hours in a UTC day
REACHED: Final = ("entered", "assigned")
ARMS: Final = ("offered", "holdout")
CHUNK_QUARTERS: Final = PER_DAY * 7  # a rebuild recounts a week per transaction
_LOCK_KEY: Final = 0x0F_0115  # PostgreSQL advisory lock: one rollup writer at a time
_IN_LIST: Final = 500


def quarters_of(start_ms: int, end_ms: int) -> range:
    """The quarter hours whose start lies in ``[start_ms, end_ms)``."""
    return range(-(-start_ms // QUARTER_MS), -(-end_ms // QUARTER_MS))


def runs(quarters: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted quarters as ``[first, end)`` runs of consecutive ones."""
    out: list[tuple[int, int]] = []
    for q in sorted(set(quarters)):
        if out and out[-1][1] == q:
            out[-1] = (out[-1][0], q + 1)
        else:
            out.append((q, q + 1))
    return out


# -- the recount of quarters [qa, qb) -----------------------------------------------------


def _q(column: Any) -> Any:
    return column // QUARTER_MS


def _in(column: Any, site_column: Any, qa: int, qb: int, site: str | None) -> ColumnElement[bool]:
    cond = and_(column >= qa * QUARTER_MS, column < qb * QUARTER_MS)
    return and_(cond, site_column == site) if site is not None else cond


def _grouped(
    site_col: Any, time_col: Any, keys: Sequence[Any], n: Any, x: Any = None
) -> Select[Any]:
    q = _q(time_col).label("q")
    cols = [site_col, q, *keys, n] + ([x] if x is not None else [])
    return select(*cols).group_by(site_col, q, *keys)


def _sessions(qa: int, qb: int, site: str | None) -> Iterator[tuple[str, Select[Any]]]:
    s = sessions.c
    where = _in(s.started_at, s.site_id, qa, qb, site)
    kind = case((s.number == 1, "new"), else_="returning")
    pages = func.coalesce(func.sum(s.page_count), 0)
    yield "visits", _grouped(s.site_id, s.started_at, [kind], func.count(), pages).where(where)
    for metric, cols in (
        ("devices", [s.device_type]),
        ("browsers", [s.browser]),
        ("referrers", [s.referrer_domain]),
        ("campaigns", [s.utm_campaign, s.utm_source, s.utm_medium]),
    ):
        yield metric, _grouped(s.site_id, s.started_at, cols, func.count()).where(where)


def _pages(qa: int, qb: int, site: str | None) -> Iterator[tuple[str, Select[Any]]]:
    e, e2 = events.alias("e"), events.alias("e2")
    where = and_(_in(e.c.ts, e.c.site_id, qa, qb, site), e.c.type == "page_view")
    yield "page_views", _grouped(e.c.site_id, e.c.ts, [e.c.url], func.count()).where(where)
    # The visit's earlier view of the URL: the events' key starts with the visitor and time.
    earlier = exists().where(
        e2.c.visitor_id == e.c.visitor_id,
        e2.c.ts <= e.c.ts,
        e2.c.session_id == e.c.session_id,
        e2.c.type == "page_view",
        e2.c.url.is_not_distinct_from(e.c.url),
        or_(e2.c.ts < e.c.ts, e2.c.event_id < e.c.event_id),
    )
    first = and_(where, ~earlier)
    yield "page_visits", _grouped(e.c.site_id, e.c.ts, [e.c.url], func.count()).where(first)


def _first_entries(qa: int, qb: int, site: str | None) -> tuple[Any, ColumnElement[bool]]:
    c, c2 = segment_changes.alias("c"), segment_changes.alias("c2")
    earlier = exists().where(
        c2.c.session_id == c.c.session_id,
        c2.c.segment == c.c.segment,
        c2.c.change.in_(REACHED),
        or_(c2.c.at < c.c.at, and_(c2.c.at == c.c.at, c2.c.id < c.c.id)),
    )
    reached = and_(_in(c.c.at, c.c.site_id, qa, qb, site), c.c.change.in_(REACHED))
    return c, and_(reached, ~earlier)


def _segments(qa: int, qb: int, site: str | None) -> Iterator[tuple[str, Select[Any]]]:
    c = segment_changes.c
    reached = and_(_in(c.at, c.site_id, qa, qb, site), c.change.in_(REACHED))
    yield "segment_entries", _grouped(c.site_id, c.at, [c.segment], func.count()).where(reached)
    f, first = _first_entries(qa, qb, site)
    yield "segment_visits", _grouped(f.c.site_id, f.c.at, [f.c.segment], func.count()).where(first)
    o = outcome_achievements.c
    won = f.join(
        outcome_achievements, and_(o.session_id == f.c.session_id, o.achieved_at >= f.c.at)
    )
    conv = _grouped(f.c.site_id, f.c.at, [f.c.segment, o.outcome], func.count())
    yield "conversions", conv.select_from(won).where(first)


def _outcomes(qa: int, qb: int, site: str | None) -> Iterator[tuple[str, Select[Any]]]:
    o = outcome_achievements.c
    value = func.coalesce(func.sum(o.value), 0.0)
    q = _grouped(o.site_id, o.achieved_at, [o.outcome], func.count(), value)
    yield "outcomes", q.where(_in(o.achieved_at, o.site_id, qa, qb, site))


def _actions(qa: int, qb: int, site: str | None) -> Iterator[tuple[str, Select[Any]]]:
    a, a2 = action_events.alias("a"), action_events.alias("a2")
    where = _in(a.c.at, a.c.site_id, qa, qb, site)
    before = or_(a2.c.at < a.c.at, and_(a2.c.at == a.c.at, a2.c.id < a.c.id))
    keys = [a.c.map, a.c.state]
    yield "actions", _grouped(a.c.site_id, a.c.at, keys, func.count()).where(where)
    # An instance is one map in one visit (core.actionmaps.instance_id): its first row of a
    # state counts the instance and the visit.
    again = exists().where(a2.c.instance_id == a.c.instance_id, a2.c.state == a.c.state, before)
    first = and_(where, ~again)
    yield "action_visits", _grouped(a.c.site_id, a.c.at, keys, func.count()).where(first)
    reason = func.coalesce(a.c.reason, "")
    blocked = and_(where, a.c.state == "blocked")
    yield "blocks", _grouped(a.c.site_id, a.c.at, [a.c.map, reason], func.count()).where(blocked)
    again_why = exists().where(
        a2.c.session_id == a.c.session_id,
        a2.c.map == a.c.map,
        a2.c.state == "blocked",
        func.coalesce(a2.c.reason, "") == reason,
        before,
    )
    q = _grouped(a.c.site_id, a.c.at, [a.c.map, reason], func.count())
    yield "block_visits", q.where(and_(blocked, ~again_why))
    o = outcome_achievements.c
    won = a.join(
        outcome_achievements, and_(o.session_id == a.c.session_id, o.achieved_at >= a.c.at)
    )
    q = _grouped(a.c.site_id, a.c.at, [a.c.map, a.c.state, o.outcome], func.count())
    yield "arm_wins", q.select_from(won).where(and_(first, a.c.state.in_(ARMS)))


_FAMILIES: Final = (_sessions, _pages, _segments, _outcomes, _actions)
METRICS: Final = (
    "visits", "devices", "browsers", "referrers", "campaigns", "page_views", "page_visits",
    "segment_entries", "segment_visits", "conversions", "outcomes", "actions",
    "action_visits", "blocks", "block_visits", "arm_wins",
)  # fmt: skip
_SUMS: Final = frozenset({"visits", "outcomes"})  # their last column is ``x``


def _as_rows(metric: str, q: Select[Any]) -> Select[Any]:
    """A metric's select as ``report_rollups``' columns, in their order."""
    site, quarter, *rest = q.selected_columns
    *keys, n = rest if metric not in _SUMS else rest[:-1]
    x = rest[-1] if metric in _SUMS else cast(null(), Float)
    pads = [cast(null(), Text), cast(null(), String), cast(null(), String)][len(keys) :]
    return q.with_only_columns(site, quarter, literal(metric, String), *keys, *pads, n, x)


_COLUMNS: Final = ("site_id", "quarter", "metric", "k1", "k2", "k3", "n", "x")


def recount(conn: Connection, qa: int, qb: int, site: str | None = None) -> None:
    """Every metric of quarters ``[qa, qb)`` (one site's, or every site's) counted from the
    raw tables into ``report_rollups`` by the database itself. The quarters' old rows must
    be gone (``replace`` deletes them first)."""
    for family in _FAMILIES:
        for metric, q in family(qa, qb, site):
            conn.execute(insert(report_rollups).from_select(list(_COLUMNS), _as_rows(metric, q)))


def _lock(conn: Connection) -> None:
    """One rollup writer at a time on PostgreSQL (a concurrent delete-then-insert of the
    same quarter would otherwise keep both inserts); SQLite has one writer anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def replace(
    conn: Connection, qa: int, qb: int, site: str | None = None, *, days: bool = True
) -> int:
    """Quarters ``[qa, qb)`` recounted in place of their rows, and unless not ``days`` the
    days they fall in summed again (in the caller's transaction); rows written."""
    t = report_rollups.c
    where = and_(t.quarter >= qa, t.quarter < qb)
    where = and_(where, t.site_id == site) if site else where
    conn.execute(delete(report_rollups).where(where))
    recount(conn, qa, qb, site)
    if days:
        resum_days(conn, qa // PER_DAY, (qb - 1) // PER_DAY + 1, site)
    return int(conn.execute(select(func.count()).where(where)).scalar_one())


def resum_days(conn: Connection, da: int, db: int, site: str | None = None) -> None:
    """UTC days ``[da, db)``' daily rows summed again from their quarters."""
    t, d = report_rollups.c, report_rollups_daily.c
    days = and_(d.day >= da, d.day < db)
    conn.execute(
        delete(report_rollups_daily).where(and_(days, d.site_id == site) if site else days)
    )
    day = (t.quarter // PER_DAY).label("day")
    keys = [t.site_id, day, t.metric, t.k1, t.k2, t.k3]
    inside = and_(t.quarter >= da * PER_DAY, t.quarter < db * PER_DAY)
    sums = (
        select(*keys, func.sum(t.n), func.sum(t.x))
        .where(and_(inside, t.site_id == site) if site else inside)
        .group_by(*keys)
    )
    cols = ["site_id", "day", "metric", "k1", "k2", "k3", "n", "x"]
    conn.execute(insert(report_rollups_daily).from_select(cols, sums))


def recount_into(engine: Engine, qa: int, qb: int, site: str | None = None) -> int:
    """Recount quarters ``[qa, qb)`` and replace their rows, in one transaction: rows written."""
    with engine.begin() as conn:
        _lock(conn)
        return replace(conn, qa, qb, site)


# -- what changed since the last pass ---------------------------------------------------


def _marks(conn: Connection) -> dict[str, int]:
    m = report_rollup_marks.c
    return {n: int(v) for n, v in conn.execute(select(m.name, m.value))}


def _set_marks(conn: Connection, marks: dict[str, int]) -> None:
    conn.execute(delete(report_rollup_marks).where(report_rollup_marks.c.name.in_(list(marks))))
    conn.execute(insert(report_rollup_marks), [{"name": k, "value": v} for k, v in marks.items()])


def touched(
    conn: Connection, *, received_since_ms: int, max_age_ms: int, action_id_above: int
) -> dict[str, set[int]]:
    """Per site, the quarters to recount: every quarter spanned by a visit that got events
    received since ``received_since_ms`` or action events after id ``action_id_above``."""
    e, a, s = events.c, action_events.c, sessions.c
    spans: dict[str, tuple[str, int, int]] = {}

    def widen(site: str, sid: str, lo: int, hi: int) -> None:
        old = spans.get(sid)
        spans[sid] = (site, min(lo, old[1]), max(hi, old[2])) if old else (site, lo, hi)

    recent = (
        select(e.site_id, e.session_id, func.min(e.ts), func.max(e.ts))
        .where(e.ts >= received_since_ms - max_age_ms, e.received_at >= received_since_ms)
        .group_by(e.site_id, e.session_id)
    )
    for site, sid, lo, hi in conn.execute(recent):
        widen(site, sid, int(lo), int(hi))
    acted = (
        select(a.site_id, a.session_id, func.min(a.at), func.max(a.at))
        .where(a.id > action_id_above)
        .group_by(a.site_id, a.session_id)
    )
    for site, sid, lo, hi in conn.execute(acted):
        widen(site, sid, int(lo), int(hi))
    ids = list(spans)
    for i in range(0, len(ids), _IN_LIST):
        q = select(s.id, s.started_at, s.last_event_at).where(s.id.in_(ids[i : i + _IN_LIST]))
        for sid, started, last in conn.execute(q):
            site, lo, hi = spans[sid]
            spans[sid] = (site, min(lo, int(started)), max(hi, int(last)))
    out: dict[str, set[int]] = {}
    for site, lo, hi in spans.values():
        out.setdefault(site, set()).update(range(lo // QUARTER_MS, hi // QUARTER_MS + 1))
    return out


def visit_quarters(conn: Connection, session_ids: Sequence[str]) -> dict[str, set[int]]:
    """Per site, the quarters these visits' rows lie in (their span, and their action
    events': a report of an offer can come after the visit's last event)."""
    s, a = sessions.c, action_events.c
    out: dict[str, set[int]] = {}
    for i in range(0, len(session_ids), _IN_LIST):
        chunk = list(session_ids[i : i + _IN_LIST])
        spans = select(s.site_id, s.started_at, s.last_event_at).where(s.id.in_(chunk))
        acted = (
            select(a.site_id, func.min(a.at), func.max(a.at))
            .where(a.session_id.in_(chunk))
            .group_by(a.site_id, a.session_id)
        )
        for q in (spans, acted):
            for site, lo, hi in conn.execute(q):
                out.setdefault(site, set()).update(
                    range(int(lo) // QUARTER_MS, int(hi) // QUARTER_MS + 1)
                )
    return out


def recount_quarters(conn: Connection, quarters: dict[str, set[int]]) -> tuple[int, int]:
    """Recount these quarters of each site in the caller's transaction (after a deletion:
    an erasure); ``(quarters, rows)``."""
    _lock(conn)
    n_quarters = n_rows = 0
    for site in sorted(quarters):
        for qa, qb in runs(quarters[site]):
            n_rows += replace(conn, qa, qb, site, days=False)
            n_quarters += qb - qa
        for da, db in runs(q // PER_DAY for q in quarters[site]):
            resum_days(conn, da, db, site)
    return n_quarters, n_rows


@dataclass(frozen=True, slots=True)
class Pass:
    """What a pass did: quarters recounted (per site summed) and rows written."""

    quarters: int
    rows: int
    rebuilt: bool = False


def catch_up(
    engine: Engine, *, now_ms: int, margin_ms: int, max_age_ms: int, may_rebuild: bool = True
) -> Pass:
    """One incremental pass: recount the quarters touched since the last pass (re-reading
    the last ``margin_ms`` of receipts, so a transaction that commits late is not missed).
    Without marks (a new database, or one migrated with history) it rebuilds everything,
    unless not ``may_rebuild`` (then it does nothing)."""
    with engine.connect() as conn:
        marks = _marks(conn)
        top = int(conn.execute(select(func.coalesce(func.max(action_events.c.id), 0))).scalar_one())
        if "received" in marks:
            dirty = touched(
                conn,
                received_since_ms=marks["received"] - margin_ms,
                max_age_ms=max_age_ms,
                action_id_above=marks["action_id"],
            )
    if "received" not in marks and not may_rebuild:
        return Pass(0, 0)
    if "received" not in marks:
        done = rebuild(engine)
        with engine.begin() as conn:
            _lock(conn)
            first = {"received": now_ms, "action_id": top, "action_top": top}
            _set_marks(conn, first | {"action_top_at": now_ms})
        return done
    # Ids of transactions still open may lie below ``top`` (PostgreSQL): the floor moves
    # up only to a maximum seen at least ``margin_ms`` ago, so those are read again later.
    new = {k: marks[k] for k in ("action_id", "action_top", "action_top_at")}
    if now_ms - new["action_top_at"] >= margin_ms:
        new = {"action_id": new["action_top"], "action_top": top, "action_top_at": now_ms}
    with engine.begin() as conn:
        n_quarters, n_rows = recount_quarters(conn, dirty)
        _set_marks(conn, new | {"received": now_ms})
    return Pass(n_quarters, n_rows)


def _span(conn: Connection, site: str | None) -> tuple[int, int] | None:
    """The first and last times in the raw tables (of one site)."""
    lo: list[int] = []
    hi: list[int] = []
    for table, col in (
        (sessions, "started_at"),
        (events, "ts"),
        (action_events, "at"),
        (segment_changes, "at"),
        (outcome_achievements, "achieved_at"),
    ):
        c = table.c[col]
        q = select(func.min(c), func.max(c))
        if site is not None:
            q = q.where(table.c.site_id == site)
        a, b = conn.execute(q).one()
        if a is not None:
            lo.append(int(a))
            hi.append(int(b))
    return (min(lo), max(hi)) if lo else None


def rebuild(engine: Engine, *, site: str | None = None, since_ms: int = 0) -> Pass:
    """Recount every quarter from ``since_ms`` on (of one site, or of all), a week per
    transaction, rollup rows of quarters whose raw rows were deleted included. Quarters
    before the oldest raw row are kept: their rows were purged past retention, and the
    rollups, counts without personal data, are all that is left of them."""
    with engine.connect() as conn:
        span = _span(conn, site)
        t = report_rollups.c
        q = select(func.max(t.quarter))
        if site is not None:
            q = q.where(t.site_id == site)
        kept = conn.execute(q).scalar_one()
    if span is None:
        return Pass(0, 0, rebuilt=True)
    qa = max(since_ms, span[0]) // QUARTER_MS
    qend = max(span[1] // QUARTER_MS, int(kept) if kept is not None else 0) + 1
    if site is None:  # whole days: every row of a day is recounted, the days' sums dropped
        qa, qend = qa // PER_DAY * PER_DAY, -(-qend // PER_DAY) * PER_DAY
    n_rows = 0
    for a in range(qa, qend, CHUNK_QUARTERS):
        n_rows += recount_into(engine, a, min(a + CHUNK_QUARTERS, qend), site)
    return Pass(max(0, qend - qa), n_rows, rebuilt=True)
