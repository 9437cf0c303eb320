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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from opportune.store.rollups import QUARTER_MS, quarters_of
from opportune.store.schema import (
    interactions,
    outcome_achievements,
    report_rollups,
    segment_changes,
    sessions,
)

__all__ = ["QUARTER_MS", "Arm", "InteractionRow", "Range"]
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


def _rolled(r: Range, *metrics: str) -> ColumnElement[bool]:
    t = report_rollups.c
    qs = quarters_of(r.start_ms, r.end_ms)
    cond = and_(
        t.metric.in_(metrics) if len(metrics) > 1 else t.metric == metrics[0],
        t.quarter >= qs.start,
        t.quarter < qs.stop,
    )
    return and_(cond, t.site_id == r.site_id) if r.site_id is not None else cond


def _by_quarter(conn: Connection, r: Range, metric: str) -> list[tuple[int, Any, int]]:
    """``(quarter, first key, n)`` of one metric."""
    t = report_rollups.c
    q = select(t.quarter, t.k1, func.sum(t.n)).where(_rolled(r, metric)).group_by(t.quarter, t.k1)
    return [(int(qq), k, int(n)) for qq, k, n in _rows(conn, q)]


def _n(metric: str) -> Any:
    t = report_rollups.c
    return func.coalesce(func.sum(case((t.metric == metric, t.n), else_=0)), 0)


def _distinct(conn: Connection, q: Any) -> dict[Any, int]:
    """``{key: distinct count}`` of a ``select(key, thing).group_by(key, thing)``."""
    sub = q.subquery()
    key, _ = sub.c
    return {k: int(n) for k, n in _rows(conn, select(key, func.count()).group_by(key))}


# -- visitor activity -------------------------------------------------------------------


def visits_by_quarter(conn: Connection, r: Range) -> list[tuple[int, bool, int]]:
    """``(quarter, new visitor?, visits)``: a visit is new when it is its visitor's first."""
    return [(qq, k == "new", n) for qq, k, n in _by_quarter(conn, r, "visits")]


def visit_totals(conn: Connection, r: Range) -> dict[str, int]:
    """Visits, distinct visitors, new visits, page views counted on the visits."""
    t, s = report_rollups.c, sessions.c
    new = func.coalesce(func.sum(case((t.k1 == "new", t.n), else_=0)), 0)
    q = select(func.coalesce(func.sum(t.n), 0), new, func.coalesce(func.sum(t.x), 0))
    visits, new_visits, pages = conn.execute(q.where(_rolled(r, "visits"))).one()
    who = (
        select(s.visitor_id)
        .where(r.within(s.started_at, s.site_id))
        .group_by(s.visitor_id)
        .subquery()
    )
    visitors = conn.execute(select(func.count()).select_from(who)).scalar_one()
    return {
        "visits": int(visits),
        "visitors": int(visitors),
        "new": int(new_visits),
        "returning": int(visits) - int(new_visits),
        "pageViews": int(pages),
    }


_KEYS: Final = {"devices": 1, "browsers": 1, "referrers": 1, "campaigns": 3}


def visits_by(conn: Connection, r: Range, metric: str, limit: int = TOP) -> list[tuple[Any, ...]]:
    """``(*values, visits)`` of visits grouped by ``metric``'s keys (``devices``,
    ``browsers``, ``referrers``, ``campaigns``), most first."""
    t = report_rollups.c
    cols = [t.k1, t.k2, t.k3][: _KEYS[metric]]
    n = func.sum(t.n).label("n")
    q = (
        select(*cols, n)
        .where(_rolled(r, metric))
        .group_by(*cols)
        .order_by(n.desc(), *cols)
        .limit(limit)
    )
    return [(*row[:-1], int(row[-1])) for row in _rows(conn, q)]


def top_pages(conn: Connection, r: Range, limit: int = TOP) -> list[tuple[str, int, int]]:
    """``(url, page views, visits)`` of the most viewed pages."""
    t = report_rollups.c
    views = _n("page_views").label("views")
    q = (
        select(t.k1, views, _n("page_visits"))
        .where(_rolled(r, "page_views", "page_visits"))
        .group_by(t.k1)
        .order_by(views.desc(), t.k1)
        .limit(limit)
    )
    return [(u or "", int(v), int(s)) for u, v, s in _rows(conn, q)]


# -- segments and outcomes --------------------------------------------------------------

_REACHED: Final = ("entered", "assigned")


def segments_reached(conn: Connection, r: Range) -> list[tuple[str, int, int, int]]:
    """``(segment, visits, visitors, entries)`` of segments entered or assigned in range."""
    t, c = report_rollups.c, segment_changes.c
    q = (
        select(t.k1, _n("segment_visits"), _n("segment_entries"))
        .where(_rolled(r, "segment_visits", "segment_entries"))
        .group_by(t.k1)
        .order_by(t.k1)
    )
    who = _distinct(
        conn,
        select(c.segment, c.visitor_id)
        .where(and_(r.within(c.at, c.site_id), c.change.in_(_REACHED)))
        .group_by(c.segment, c.visitor_id),
    )
    return [(s, int(v), who.get(s, 0), int(n)) for s, v, n in _rows(conn, q)]


def segment_entries_by_quarter(conn: Connection, r: Range) -> list[tuple[int, str, int]]:
    """``(quarter, segment, entries)``."""
    return _by_quarter(conn, r, "segment_entries")


def outcomes_achieved(conn: Connection, r: Range) -> list[tuple[str, int, int, float]]:
    """``(outcome, visits, visitors, total value)`` achieved in range."""
    t, o = report_rollups.c, outcome_achievements.c
    q = (
        select(t.k1, func.sum(t.n), func.coalesce(func.sum(t.x), 0.0))
        .where(_rolled(r, "outcomes"))
        .group_by(t.k1)
        .order_by(t.k1)
    )
    who = _distinct(
        conn,
        select(o.outcome, o.visitor_id)
        .where(r.within(o.achieved_at, o.site_id))
        .group_by(o.outcome, o.visitor_id),
    )
    return [(n, int(v), who.get(n, 0), float(val)) for n, v, val in _rows(conn, q)]


def outcomes_by_quarter(conn: Connection, r: Range) -> list[tuple[int, str, int]]:
    """``(quarter, outcome, visits achieving it)``."""
    return _by_quarter(conn, r, "outcomes")


def conversion_by_segment(conn: Connection, r: Range) -> list[tuple[str, str, int]]:
    """``(segment, outcome, visits)``: visits that first reached the segment in range and
    then achieved the outcome later in the same visit."""
    t = report_rollups.c
    q = (
        select(t.k1, t.k2, func.sum(t.n))
        .where(_rolled(r, "conversions"))
        .group_by(t.k1, t.k2)
        .order_by(t.k1, t.k2)
    )
    return [(s, n, int(v)) for s, n, v in _rows(conn, q)]


# -- action maps ------------------------------------------------------------------------


def action_states(conn: Connection, r: Range) -> list[tuple[str, str, int, int, int]]:
    """``(map, state, instances, visits, rows)`` of action events in range; an instance is
    one map in one visit, so instances and visits are the same count."""
    t = report_rollups.c
    q = (
        select(t.k1, t.k2, _n("action_visits"), _n("actions"))
        .where(_rolled(r, "action_visits", "actions"))
        .group_by(t.k1, t.k2)
    )
    return [(m, s, int(i), int(i), int(n)) for m, s, i, n in _rows(conn, q)]


def blocked_reasons(conn: Connection, r: Range) -> list[tuple[str, str, int, int]]:
    """``(map, reason, visits, times)`` of blocks in range, most frequent first."""
    t = report_rollups.c
    n = _n("blocks").label("n")
    q = (
        select(t.k1, t.k2, _n("block_visits"), n)
        .where(_rolled(r, "blocks", "block_visits"))
        .group_by(t.k1, t.k2)
        .order_by(t.k1, n.desc(), t.k2)
    )
    return [(m, why or "", int(v), int(c)) for m, why, v, c in _rows(conn, q)]


def attributed(conn: Connection, r: Range) -> list[tuple[str, str, int]]:
    """``(map, outcome, visits)``: visits first offered by the map in range that achieved
    the outcome after that offer."""
    t = report_rollups.c
    q = (
        select(t.k1, t.k3, func.sum(t.n))
        .where(and_(_rolled(r, "arm_wins"), t.k2 == "offered"))
        .group_by(t.k1, t.k3)
        .order_by(t.k1, t.k3)
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
    t = report_rollups.c
    name = {"offered": "engaged", "holdout": "holdout"}
    mine = and_(t.k1.in_(list(maps)), t.k2.in_(list(name)))
    visits = select(t.k1, t.k2, func.sum(t.n)).where(and_(_rolled(r, "action_visits"), mine))
    out = {(m, name[s]): Arm(int(n), {}) for m, s, n in _rows(conn, visits.group_by(t.k1, t.k2))}
    wins = select(t.k1, t.k2, t.k3, func.sum(t.n)).where(and_(_rolled(r, "arm_wins"), mine))
    for m, s, o, n in _rows(conn, wins.group_by(t.k1, t.k2, t.k3)):
        out.setdefault((m, name[s]), Arm(0, {})).won[o] = int(n)
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
