"""The reports' reads: counts over a time range, the same SQL on SQLite and PostgreSQL.

The website's counts come from the rollups (``store/rollups.py``): per site, UTC quarter
hour (the millisecond time divided by 900 000), metric and key values, summed here over
the quarters of ``[start_ms, end_ms)``; ``engine/reports.py`` folds quarter hours into the
local days or hours of a time zone. Every zone's offset is a whole number of quarter
hours, so a quarter hour never straddles two local hours, and a local midnight is a
quarter's start. Read from the raw tables, because they do not add up over quarters: the
distinct **visitors** (of the range, of a segment, of an outcome), counted exactly on the
time indexes, and the contact centre's interactions (few rows, changed in place).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import and_, case, func, select, union_all
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from opportune.store.rollups import PER_DAY, QUARTER_MS, quarters_of
from opportune.store.schema import (
    agent_presence_log,
    interactions,
    outcome_achievements,
    report_rollups,
    report_rollups_daily,
    segment_changes,
    sessions,
    visitors,
)

__all__ = ["QUARTER_MS", "Arm", "Buckets", "InteractionRow", "Range"]
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


# -- the rollups -------------------------------------------------------------------------


def _site(r: Range, column: Any, cond: ColumnElement[bool]) -> ColumnElement[bool]:
    return and_(cond, column == r.site_id) if r.site_id is not None else cond


def _metric(column: Any, metrics: Sequence[str]) -> ColumnElement[bool]:
    cond: ColumnElement[bool] = column.in_(metrics) if len(metrics) > 1 else column == metrics[0]
    return cond


def _rolled(r: Range, *metrics: str) -> Any:
    """The rollup rows of ``metrics`` covering ``r`` (``metric k1 k2 k3 n x``): its whole UTC
    days from the daily sums, the quarter hours at either end from the quarters."""
    t, d = report_rollups.c, report_rollups_daily.c
    qs = quarters_of(r.start_ms, r.end_ms)
    da, db = -(-qs.start // PER_DAY), qs.stop // PER_DAY
    if da >= db:
        edges: list[tuple[int, int]] = [(qs.start, qs.stop)]
    else:
        edges = [(qs.start, da * PER_DAY), (db * PER_DAY, qs.stop)]
    parts = [
        select(t.metric, t.k1, t.k2, t.k3, t.n, t.x).where(
            _site(r, t.site_id, and_(_metric(t.metric, metrics), t.quarter >= a, t.quarter < b))
        )
        for a, b in edges
        if a < b
    ]
    if da < db:
        parts.append(
            select(d.metric, d.k1, d.k2, d.k3, d.n, d.x).where(
                _site(r, d.site_id, and_(_metric(d.metric, metrics), d.day >= da, d.day < db))
            )
        )
    if not parts:  # an empty range
        parts = [select(t.metric, t.k1, t.k2, t.k3, t.n, t.x).where(t.quarter < 0, t.quarter > 0)]
    return union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()


@dataclass(frozen=True, slots=True)
class Buckets:
    """Local buckets of ``size`` quarter hours (96: days, 4: hours) over stretches of
    quarters ``[first, end)`` in which the zone is ``offset`` quarter hours ahead of UTC:
    the database sums each bucket, ``(quarter + offset) // size``, rather than every
    quarter hour being read. ``size`` 1 with no stretches: quarter by quarter."""

    size: int = 1
    stretches: tuple[tuple[int, int, int], ...] = ()


def _by_quarter(
    conn: Connection, r: Range, metric: str, b: Buckets | None = None
) -> list[tuple[int, Any, int]]:
    """``(quarter, first key, n)`` of one metric; with buckets, the quarter is the first of
    each bucket (of each stretch: a bucket split by a clock change comes in two rows)."""
    t = report_rollups.c
    qs = quarters_of(r.start_ms, r.end_ms)
    out: list[tuple[int, Any, int]] = []
    for first, end, offset in b.stretches if b and b.stretches else ((qs.start, qs.stop, 0),):
        lo, hi = max(first, qs.start), min(end, qs.stop)
        if lo >= hi:
            continue
        size = b.size if b else 1
        bucket = ((t.quarter + offset) // size).label("b") if size > 1 else t.quarter
        cond = _site(r, t.site_id, and_(t.metric == metric, t.quarter >= lo, t.quarter < hi))
        q = select(bucket, t.k1, func.sum(t.n)).where(cond).group_by(bucket, t.k1)
        out += [
            (max(lo, int(k) * size - offset) if size > 1 else int(k), key, int(n))
            for k, key, n in _rows(conn, q)
        ]
    return out


def _n(s: Any, metric: str) -> Any:
    return func.coalesce(func.sum(case((s.c.metric == metric, s.c.n), else_=0)), 0)


def _distinct(conn: Connection, q: Any) -> dict[Any, int]:
    """``{key: distinct count}`` of a ``select(key, thing).group_by(key, thing)``."""
    sub = q.subquery()
    key, _ = sub.c
    return {k: int(n) for k, n in _rows(conn, select(key, func.count()).group_by(key))}


# -- visitor activity -------------------------------------------------------------------


def visits_by_quarter(
    conn: Connection, r: Range, b: Buckets | None = None
) -> list[tuple[int, bool, int]]:
    """``(quarter, new visitor?, visits)``: a visit is new when it is its visitor's first."""
    return [(qq, k == "new", n) for qq, k, n in _by_quarter(conn, r, "visits", b)]


def visit_totals(conn: Connection, r: Range, *, visitors: bool = True) -> dict[str, int]:
    """Visits, distinct visitors (unless not ``visitors``: 0), new visits, page views
    counted on the visits."""
    v = _rolled(r, "visits")
    new = func.coalesce(func.sum(case((v.c.k1 == "new", v.c.n), else_=0)), 0)
    q = select(func.coalesce(func.sum(v.c.n), 0), new, func.coalesce(func.sum(v.c.x), 0))
    visits, new_visits, pages = conn.execute(q).one()
    return {
        "visits": int(visits),
        "visitors": distinct_visitors(conn, r) if visitors else 0,
        "new": int(new_visits),
        "returning": int(visits) - int(new_visits),
        "pageViews": int(pages),
    }


def distinct_visitors(conn: Connection, r: Range, *, now_ms: int | None = None) -> int:
    """Visitors with a visit started in range, exactly. A range that ends after every visit
    that can exist (``now_ms`` plus an hour of clock skew) is one count on the visitors'
    ``last_visit_at`` index: a visitor whose latest visit started in it had one there, and
    one whose latest visit started before it had none. Any other range counts the distinct
    visitors of its visits."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if r.end_ms > now_ms + 3_600_000:
        v = visitors.c
        q = select(func.count()).where(_site(r, v.site_id, v.last_visit_at >= r.start_ms))
        return int(conn.execute(q).scalar_one())
    s = sessions.c
    who = (
        select(s.visitor_id)
        .where(r.within(s.started_at, s.site_id))
        .group_by(s.visitor_id)
        .subquery()
    )
    return int(conn.execute(select(func.count()).select_from(who)).scalar_one())


_KEYS: Final = {"devices": 1, "browsers": 1, "referrers": 1, "campaigns": 3}


def visits_by(conn: Connection, r: Range, metric: str, limit: int = TOP) -> list[tuple[Any, ...]]:
    """``(*values, visits)`` of visits grouped by ``metric``'s keys (``devices``,
    ``browsers``, ``referrers``, ``campaigns``), most first."""
    s = _rolled(r, metric)
    cols = [s.c.k1, s.c.k2, s.c.k3][: _KEYS[metric]]
    n = func.sum(s.c.n).label("n")
    q = select(*cols, n).group_by(*cols).order_by(n.desc(), *cols).limit(limit)
    return [(*row[:-1], int(row[-1])) for row in _rows(conn, q)]


def top_pages(conn: Connection, r: Range, limit: int = TOP) -> list[tuple[str, int, int]]:
    """``(url, page views, visits)`` of the most viewed pages."""
    s = _rolled(r, "page_views", "page_visits")
    views = _n(s, "page_views").label("views")
    q = (
        select(s.c.k1, views, _n(s, "page_visits"))
        .group_by(s.c.k1)
        .order_by(views.desc(), s.c.k1)
        .limit(limit)
    )
    return [(u or "", int(v), int(n)) for u, v, n in _rows(conn, q)]


# -- segments and outcomes --------------------------------------------------------------

_REACHED: Final = ("entered", "assigned")


def segments_reached(
    conn: Connection, r: Range, *, visitors: bool = True
) -> list[tuple[str, int, int, int]]:
    """``(segment, visits, visitors, entries)`` of segments entered or assigned in range
    (visitors 0 unless ``visitors``: they are the costly part)."""
    s, c = _rolled(r, "segment_visits", "segment_entries"), segment_changes.c
    q = (
        select(s.c.k1, _n(s, "segment_visits"), _n(s, "segment_entries"))
        .group_by(s.c.k1)
        .order_by(s.c.k1)
    )
    who = (
        _distinct(
            conn,
            select(c.segment, c.visitor_id)
            .where(and_(r.within(c.at, c.site_id), c.change.in_(_REACHED)))
            .group_by(c.segment, c.visitor_id),
        )
        if visitors
        else {}
    )
    return [(g, int(v), who.get(g, 0), int(n)) for g, v, n in _rows(conn, q)]


def segment_entries_by_quarter(
    conn: Connection, r: Range, b: Buckets | None = None
) -> list[tuple[int, str, int]]:
    """``(quarter, segment, entries)``."""
    return _by_quarter(conn, r, "segment_entries", b)


def outcomes_achieved(conn: Connection, r: Range) -> list[tuple[str, int, int, float]]:
    """``(outcome, visits, visitors, total value)`` achieved in range."""
    s, o = _rolled(r, "outcomes"), outcome_achievements.c
    q = (
        select(s.c.k1, func.sum(s.c.n), func.coalesce(func.sum(s.c.x), 0.0))
        .group_by(s.c.k1)
        .order_by(s.c.k1)
    )
    who = _distinct(
        conn,
        select(o.outcome, o.visitor_id)
        .where(r.within(o.achieved_at, o.site_id))
        .group_by(o.outcome, o.visitor_id),
    )
    return [(n, int(v), who.get(n, 0), float(val)) for n, v, val in _rows(conn, q)]


def outcomes_by_quarter(
    conn: Connection, r: Range, b: Buckets | None = None
) -> list[tuple[int, str, int]]:
    """``(quarter, outcome, visits achieving it)``."""
    return _by_quarter(conn, r, "outcomes", b)


def conversion_by_segment(conn: Connection, r: Range) -> list[tuple[str, str, int]]:
    """``(segment, outcome, visits)``: visits that first reached the segment in range and
    then achieved the outcome later in the same visit."""
    s = _rolled(r, "conversions")
    q = select(s.c.k1, s.c.k2, func.sum(s.c.n)).group_by(s.c.k1, s.c.k2).order_by(s.c.k1, s.c.k2)
    return [(g, n, int(v)) for g, n, v in _rows(conn, q)]


# -- action maps ------------------------------------------------------------------------


def action_states(conn: Connection, r: Range) -> list[tuple[str, str, int, int, int]]:
    """``(map, state, instances, visits, rows)`` of action events in range; an instance is
    one map in one visit, so instances and visits are the same count."""
    s = _rolled(r, "action_visits", "actions")
    q = select(s.c.k1, s.c.k2, _n(s, "action_visits"), _n(s, "actions")).group_by(s.c.k1, s.c.k2)
    return [(m, st, int(i), int(i), int(n)) for m, st, i, n in _rows(conn, q)]


def blocked_reasons(conn: Connection, r: Range) -> list[tuple[str, str, int, int]]:
    """``(map, reason, visits, times)`` of blocks in range, most frequent first."""
    s = _rolled(r, "blocks", "block_visits")
    n = _n(s, "blocks").label("n")
    q = (
        select(s.c.k1, s.c.k2, _n(s, "block_visits"), n)
        .group_by(s.c.k1, s.c.k2)
        .order_by(s.c.k1, n.desc(), s.c.k2)
    )
    return [(m, why or "", int(v), int(c)) for m, why, v, c in _rows(conn, q)]


def attributed(conn: Connection, r: Range) -> list[tuple[str, str, int]]:
    """``(map, outcome, visits)``: visits first offered by the map in range that achieved
    the outcome after that offer."""
    s = _rolled(r, "arm_wins")
    q = (
        select(s.c.k1, s.c.k3, func.sum(s.c.n))
        .where(s.c.k2 == "offered")
        .group_by(s.c.k1, s.c.k3)
        .order_by(s.c.k1, s.c.k3)
    )
    return [(m, n, int(c)) for m, n, c in _rows(conn, q)]


@dataclass(frozen=True, slots=True)
class Arm:
    """One arm of a map's holdout comparison: its visits, and of those the visits that
    achieved each outcome after the decision."""

    visits: int
    won: dict[str, int]


def map_arms(conn: Connection, r: Range, maps: Sequence[str]) -> dict[tuple[str, str], Arm]:
    """Per ``(map, arm)`` (``engaged``: offered, or ``holdout``) the visits first decided in
    range: the input of the uplift, the rule of ``GET /v1/action-maps/{name}/uplift``."""
    if not maps:
        return {}
    name = {"offered": "engaged", "holdout": "holdout"}
    s = _rolled(r, "action_visits", "arm_wins")
    mine = and_(s.c.k1.in_(list(maps)), s.c.k2.in_(list(name)))
    visits = select(s.c.k1, s.c.k2, func.sum(s.c.n)).where(
        and_(mine, s.c.metric == "action_visits")
    )
    out = {
        (m, name[st]): Arm(int(n), {}) for m, st, n in _rows(conn, visits.group_by(s.c.k1, s.c.k2))
    }
    wins = select(s.c.k1, s.c.k2, s.c.k3, func.sum(s.c.n)).where(
        and_(mine, s.c.metric == "arm_wins")
    )
    for m, st, o, n in _rows(conn, wins.group_by(s.c.k1, s.c.k2, s.c.k3)):
        out.setdefault((m, name[st]), Arm(0, {})).won[o] = int(n)
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


def presence_history(conn: Connection, r: Range) -> dict[str, list[tuple[int, str]]]:
    """Per agent, ``(at, presence)`` in order: the presence in force at the range's start
    (if any), then every change in range."""
    p = agent_presence_log.c
    last = (
        select(p.agent_id, func.max(p.at).label("at"))
        .where(p.at < r.start_ms)
        .group_by(p.agent_id)
        .subquery()
    )
    before = select(p.agent_id, p.at, p.id, p.presence).join(
        last, and_(p.agent_id == last.c.agent_id, p.at == last.c.at)
    )
    during = select(p.agent_id, p.at, p.id, p.presence).where(r.within(p.at))
    rows = sorted(_rows(conn, before) + _rows(conn, during), key=lambda x: (x[0], x[1], x[2]))
    out: dict[str, list[tuple[int, str]]] = {}
    for agent, at, _, presence in rows:  # two rows at one instant: the later one holds
        out.setdefault(agent, []).append((max(int(at), r.start_ms), presence))
    return out


def handling_spans(conn: Connection, r: Range, now_ms: int) -> dict[str, list[tuple[int, int]]]:
    """Per agent, ``(assigned, ended)`` of the interactions they held during the range (one
    still assigned: until ``now_ms``)."""
    t = interactions.c
    end = func.coalesce(t.ended_at, now_ms)
    q = select(t.agent_id, t.assigned_at, end).where(
        t.agent_id.is_not(None),
        t.assigned_at.is_not(None),
        t.assigned_at < r.end_ms,
        end > r.start_ms,
    )
    out: dict[str, list[tuple[int, int]]] = {}
    for agent, a, e in _rows(conn, q):
        out.setdefault(agent, []).append((int(a), int(e)))
    return out
