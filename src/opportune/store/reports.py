"""The reports' reads: counts over a time range, the same SQL on SQLite and PostgreSQL.

Every read is bounded by ``[start_ms, end_ms)`` on an indexed time column. Counts over
time are grouped in SQL by quarter hour of UTC (integer division of the millisecond
timestamps, which both databases do alike); ``engine/reports.py`` folds quarter hours into
the local days or hours of a time zone. Every zone's offset is a whole number of quarter
hours, so a quarter hour never straddles two local hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import and_, case, distinct, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from opportune.store.schema import (
    action_events,
    events,
    interactions,
    outcome_achievements,
    segment_changes,
    sessions,
)

QUARTER_MS: Final = 900_000
TOP: Final = 20  # rows of a "top" table (pages, referrers, campaigns)


@dataclass(frozen=True, slots=True)
class Range:
    """``[start_ms, end_ms)`` in UTC milliseconds, optionally one site's."""

    start_ms: int
    end_ms: int
    site_id: str | None = None

    def within(self, column: Any, site_column: Any = None) -> ColumnElement[bool]:
        cond = and_(column >= self.start_ms, column < self.end_ms)
        if self.site_id is not None and site_column is not None:
            cond = and_(cond, site_column == self.site_id)
        return cond


def _rows(conn: Connection, q: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(q)]


# -- visitor activity -------------------------------------------------------------------


def visits_by_quarter(conn: Connection, r: Range) -> list[tuple[int, bool, int]]:
    """``(quarter, new visitor?, visits)``: a visit is new when it is its visitor's first."""
    s = sessions
    quarter = (s.c.started_at // QUARTER_MS).label("q")
    new = case((s.c.number == 1, 1), else_=0).label("new")
    q = (
        select(quarter, new, func.count())
        .where(r.within(s.c.started_at, s.c.site_id))
        .group_by(quarter, new)
    )
    return [(int(qq), bool(n), int(c)) for qq, n, c in _rows(conn, q)]


def visit_totals(conn: Connection, r: Range) -> dict[str, int]:
    """Visits, distinct visitors, new visits, page views counted on the visits."""
    s = sessions
    q = select(
        func.count(),
        func.count(distinct(s.c.visitor_id)),
        func.coalesce(func.sum(case((s.c.number == 1, 1), else_=0)), 0),
        func.coalesce(func.sum(s.c.page_count), 0),
    ).where(r.within(s.c.started_at, s.c.site_id))
    visits, visitors, new, pages = conn.execute(q).one()
    return {
        "visits": int(visits),
        "visitors": int(visitors),
        "new": int(new),
        "returning": int(visits) - int(new),
        "pageViews": int(pages),
    }


def visits_by(conn: Connection, r: Range, *columns: str, limit: int = TOP) -> list[tuple[Any, ...]]:
    """``(*values, visits, visitors)`` of visits grouped by session ``columns``, most first."""
    s = sessions
    cols = [s.c[c] for c in columns]
    n = func.count().label("n")
    q = (
        select(*cols, n, func.count(distinct(s.c.visitor_id)))
        .where(r.within(s.c.started_at, s.c.site_id))
        .group_by(*cols)
        .order_by(n.desc(), *cols)
        .limit(limit)
    )
    return _rows(conn, q)


def top_pages(conn: Connection, r: Range, limit: int = TOP) -> list[tuple[str, int, int]]:
    """``(url, page views, visits)`` of the most viewed pages."""
    e = events
    n = func.count().label("n")
    q = (
        select(e.c.url, n, func.count(distinct(e.c.session_id)))
        .where(and_(r.within(e.c.ts, e.c.site_id), e.c.type == "page_view"))
        .group_by(e.c.url)
        .order_by(n.desc(), e.c.url)
        .limit(limit)
    )
    return [(u or "", int(v), int(s)) for u, v, s in _rows(conn, q)]


# -- segments and outcomes --------------------------------------------------------------

_REACHED: Final = ("entered", "assigned")


def segments_reached(conn: Connection, r: Range) -> list[tuple[str, int, int, int]]:
    """``(segment, visits, visitors, entries)`` of segments entered or assigned in range."""
    c = segment_changes
    q = (
        select(
            c.c.segment,
            func.count(distinct(c.c.session_id)),
            func.count(distinct(c.c.visitor_id)),
            func.count(),
        )
        .where(and_(r.within(c.c.at, c.c.site_id), c.c.change.in_(_REACHED)))
        .group_by(c.c.segment)
        .order_by(c.c.segment)
    )
    return [(s, int(v), int(p), int(n)) for s, v, p, n in _rows(conn, q)]


def segment_entries_by_quarter(conn: Connection, r: Range) -> list[tuple[int, str, int]]:
    """``(quarter, segment, entries)``."""
    c = segment_changes
    quarter = (c.c.at // QUARTER_MS).label("q")
    q = (
        select(quarter, c.c.segment, func.count())
        .where(and_(r.within(c.c.at, c.c.site_id), c.c.change.in_(_REACHED)))
        .group_by(quarter, c.c.segment)
    )
    return [(int(qq), s, int(n)) for qq, s, n in _rows(conn, q)]


def outcomes_achieved(conn: Connection, r: Range) -> list[tuple[str, int, int, float]]:
    """``(outcome, visits, visitors, total value)`` achieved in range."""
    o = outcome_achievements
    q = (
        select(
            o.c.outcome,
            func.count(),
            func.count(distinct(o.c.visitor_id)),
            func.coalesce(func.sum(o.c.value), 0.0),
        )
        .where(r.within(o.c.achieved_at, o.c.site_id))
        .group_by(o.c.outcome)
        .order_by(o.c.outcome)
    )
    return [(n, int(v), int(p), float(val)) for n, v, p, val in _rows(conn, q)]


def outcomes_by_quarter(conn: Connection, r: Range) -> list[tuple[int, str, int]]:
    """``(quarter, outcome, visits achieving it)``."""
    o = outcome_achievements
    quarter = (o.c.achieved_at // QUARTER_MS).label("q")
    q = (
        select(quarter, o.c.outcome, func.count())
        .where(r.within(o.c.achieved_at, o.c.site_id))
        .group_by(quarter, o.c.outcome)
    )
    return [(int(qq), n, int(c)) for qq, n, c in _rows(conn, q)]


def conversion_by_segment(conn: Connection, r: Range) -> list[tuple[str, str, int]]:
    """``(segment, outcome, visits)``: visits that reached the segment in range and then
    achieved the outcome later in the same visit."""
    c, o = segment_changes, outcome_achievements
    q = (
        select(c.c.segment, o.c.outcome, func.count(distinct(c.c.session_id)))
        .select_from(c.join(o, and_(o.c.session_id == c.c.session_id, o.c.achieved_at >= c.c.at)))
        .where(and_(r.within(c.c.at, c.c.site_id), c.c.change.in_(_REACHED)))
        .group_by(c.c.segment, o.c.outcome)
        .order_by(c.c.segment, o.c.outcome)
    )
    return [(s, n, int(v)) for s, n, v in _rows(conn, q)]


# -- action maps ------------------------------------------------------------------------


def action_states(conn: Connection, r: Range) -> list[tuple[str, str, int, int, int]]:
    """``(map, state, instances, visits, rows)`` of action events in range."""
    a = action_events
    q = (
        select(
            a.c.map,
            a.c.state,
            func.count(distinct(a.c.instance_id)),
            func.count(distinct(a.c.session_id)),
            func.count(),
        )
        .where(r.within(a.c.at, a.c.site_id))
        .group_by(a.c.map, a.c.state)
    )
    return [(m, s, int(i), int(v), int(n)) for m, s, i, v, n in _rows(conn, q)]


def blocked_reasons(conn: Connection, r: Range) -> list[tuple[str, str, int, int]]:
    """``(map, reason, visits, times)`` of blocks in range, most frequent first."""
    a = action_events
    n = func.count().label("n")
    q = (
        select(a.c.map, a.c.reason, func.count(distinct(a.c.session_id)), n)
        .where(and_(r.within(a.c.at, a.c.site_id), a.c.state == "blocked"))
        .group_by(a.c.map, a.c.reason)
        .order_by(a.c.map, n.desc(), a.c.reason)
    )
    return [(m, why or "", int(v), int(c)) for m, why, v, c in _rows(conn, q)]


def _first(state: str, r: Range) -> Any:
    """Each map's visits with ``state`` in range and the first time it was written."""
    a = action_events
    return (
        select(a.c.map, a.c.session_id, func.min(a.c.at).label("at"))
        .where(and_(r.within(a.c.at, a.c.site_id), a.c.state == state))
        .group_by(a.c.map, a.c.session_id)
        .subquery()
    )


def attributed(conn: Connection, r: Range) -> list[tuple[str, str, int]]:
    """``(map, outcome, visits)``: visits offered by the map in range that achieved the
    outcome after the (first) offer."""
    f, o = _first("offered", r), outcome_achievements
    q = (
        select(f.c.map, o.c.outcome, func.count())
        .select_from(f.join(o, and_(o.c.session_id == f.c.session_id, o.c.achieved_at >= f.c.at)))
        .group_by(f.c.map, o.c.outcome)
        .order_by(f.c.map, o.c.outcome)
    )
    return [(m, n, int(c)) for m, n, c in _rows(conn, q)]


def map_arms(conn: Connection, r: Range, maps: Sequence[str]) -> dict[tuple[str, str], list[Any]]:
    """Per ``(map, arm)`` (arm ``engaged`` or ``holdout``) the visits decided in range, each
    as ``(session, decided at, {outcome: achieved at})``: the input of the uplift, with the
    same rule as ``GET /v1/action-maps/{name}/uplift`` (offered is the engaged arm)."""
    a, o = action_events, outcome_achievements
    out: dict[tuple[str, str], list[Any]] = {}
    if not maps:
        return out
    visits: dict[tuple[str, str], tuple[str, int]] = {}
    q = (
        select(a.c.map, a.c.session_id, a.c.state, func.min(a.c.at))
        .where(
            and_(
                r.within(a.c.at, a.c.site_id),
                a.c.map.in_(list(maps)),
                a.c.state.in_(["offered", "holdout"]),
            )
        )
        .group_by(a.c.map, a.c.session_id, a.c.state)
    )
    for m, sid, st, at in _rows(conn, q):
        visits[(m, sid)] = ("engaged" if st == "offered" else "holdout", int(at))
    won: dict[str, dict[str, int]] = {}
    sids = sorted({sid for _, sid in visits})
    for i in range(0, len(sids), 500):  # bounded IN lists
        q2 = select(o.c.session_id, o.c.outcome, o.c.achieved_at).where(
            o.c.session_id.in_(sids[i : i + 500])
        )
        for sid, name, at in _rows(conn, q2):
            won.setdefault(sid, {})[name] = int(at)
    for (m, sid), (arm, at) in sorted(visits.items()):
        out.setdefault((m, arm), []).append((sid, at, won.get(sid, {})))
    return out


# -- queues and agents ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InteractionRow:
    id: str
    queue: str
    agent_id: str | None
    status: str
    arrived_at: int
    assigned_at: int | None
    ended_at: int | None
    wrap_up_code: str | None
    arm: str | None


def interactions_in(conn: Connection, r: Range) -> list[InteractionRow]:
    """Interactions that arrived in range, oldest first (no site: routing has none)."""
    t = interactions
    q = (
        select(
            t.c.id,
            t.c.queue,
            t.c.agent_id,
            t.c.status,
            t.c.arrived_at,
            t.c.assigned_at,
            t.c.ended_at,
            t.c.wrap_up_code,
            t.c.arm,
        )
        .where(r.within(t.c.arrived_at))
        .order_by(t.c.arrived_at, t.c.id)
    )
    return [InteractionRow(*row) for row in _rows(conn, q)]
