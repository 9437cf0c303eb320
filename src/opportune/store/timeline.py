"""Reads for the agent's context panel: the visit a conversation is about, what happened in
it (events, offers, segments, outcomes) since a moment, the visitor's earlier visits with
their outcomes, and the conversation's bot columns when the schema has them.

Every function takes a ``Connection`` and runs the same on SQLite and PostgreSQL. A visit
is small (hundreds of rows), so its facts are read whole or from a moment on; events are
one range of their visitor's primary key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from opportune.store.schema import (
    action_events,
    conversations,
    events,
    outcome_achievements,
    segment_changes,
    sessions,
    users,
    visitors,
)

# Event types worth a line in the timeline; scrolls and resizes are noise to a person.
TIMELINE_TYPES = (
    "page_view",
    "search",
    "click",
    "form_submitted",
    "form_abandoned",
    "form_error",
    "idle",
    "custom",
    "identify",
)


@dataclass(frozen=True, slots=True)
class Facts:
    """A visit's recorded facts from a moment on, each list in time order."""

    events: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]


def visit_of(conn: Connection, visitor_id: str, *, at_ms: int | None) -> dict[str, Any] | None:
    """The visitor's visit going on at ``at_ms`` (the latest started by then), or their
    latest visit when ``at_ms`` is None; as a mapping of the session row."""
    q = select(sessions).where(sessions.c.visitor_id == visitor_id)
    if at_ms is not None:
        q = q.where(sessions.c.started_at <= at_ms)
    row = conn.execute(q.order_by(sessions.c.started_at.desc()).limit(1)).first()
    return dict(row._mapping) if row is not None else None


def visitor_row(conn: Connection, visitor_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(visitors).where(visitors.c.id == visitor_id)).first()
    return dict(row._mapping) if row is not None else None


def facts_since(conn: Connection, session: dict[str, Any], *, since_ms: int) -> Facts:
    """What was recorded in the visit from ``since_ms`` on (events by the time the server
    received them, the rest by when they happened)."""
    e = events.c
    evs = conn.execute(
        select(e.event_id, e.ts, e.received_at, e.seq, e.type, e.url, e.name, e.query, e.title)
        .add_columns(e.data)
        .where(
            e.visitor_id == session["visitor_id"],
            e.ts >= session["started_at"],
            e.ts <= session["last_event_at"],
            e.session_id == session["id"],
            e.received_at >= since_ms,
            e.type.in_(TIMELINE_TYPES),
        )
        .order_by(e.ts, e.received_at, e.seq)
    ).all()
    a = action_events.c
    acts = conn.execute(
        select(a.id, a.map, a.instance_id, a.state, a.reason, a.at, a.detail)
        .where(a.session_id == session["id"], a.at >= since_ms)
        .order_by(a.at, a.id)
    ).all()
    s = segment_changes.c
    segs = conn.execute(
        select(s.id, s.segment, s.change, s.at)
        .where(s.session_id == session["id"], s.at >= since_ms)
        .order_by(s.at, s.id)
    ).all()
    o = outcome_achievements.c
    outs = conn.execute(
        select(o.outcome, o.achieved_at, o.value)
        .where(o.session_id == session["id"], o.achieved_at >= since_ms)
        .order_by(o.achieved_at)
    ).all()
    return Facts(
        [{**r._mapping, "data": _json(r.data)} for r in evs],
        [{**r._mapping, "detail": _json(r.detail)} for r in acts],
        [dict(r._mapping) for r in segs],
        [dict(r._mapping) for r in outs],
    )


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def earlier_visits(
    conn: Connection,
    *,
    visitor_ids: Sequence[str],
    before_ms: int,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """The visits of these visitors (a customer's devices) started before ``before_ms``,
    newest first, each with the outcomes it achieved."""
    if not visitor_ids:
        return []
    s = sessions.c
    rows = conn.execute(
        select(
            s.id,
            s.visitor_id,
            s.number,
            s.started_at,
            s.last_event_at,
            s.page_count,
            s.event_count,
            s.device_type,
            s.utm_campaign,
            s.referrer_domain,
            s.landing_url,
        )
        .where(s.visitor_id.in_(list(visitor_ids)), s.started_at < before_ms)
        .order_by(s.started_at.desc(), s.id.desc())
        .limit(limit)
    ).all()
    found = [dict(r._mapping) for r in rows]
    ids = [r["id"] for r in found]
    achieved: dict[str, list[str]] = {}
    if ids:
        o = outcome_achievements.c
        for sid, outcome in conn.execute(
            select(o.session_id, o.outcome).where(o.session_id.in_(ids)).order_by(o.achieved_at)
        ):
            achieved.setdefault(sid, []).append(outcome)
    for r in found:
        r["outcomes"] = achieved.get(r["id"], [])
    return found


def visit_count(conn: Connection, *, visitor_ids: Sequence[str], from_ms: int, to_ms: int) -> int:
    """How many visits of these visitors started in ``[from_ms, to_ms]``."""
    if not visitor_ids:
        return 0
    s = sessions.c
    q = select(func.count()).where(
        s.visitor_id.in_(list(visitor_ids)), s.started_at >= from_ms, s.started_at <= to_ms
    )
    return int(conn.execute(q).scalar_one())


def visitors_of(conn: Connection, customer_id: str) -> list[str]:
    """Every device (visitor id) of a customer."""
    return list(
        conn.execute(select(visitors.c.id).where(visitors.c.customer_id == customer_id)).scalars()
    )


def bot_columns(conn: Connection, conversation_id: str) -> dict[str, Any]:
    """The conversation's bot columns (``intent``, ``intent_confidence``, ``slots``,
    ``flow``) where the schema has them; JSON text decoded. Empty when it has none."""
    wanted = [c for c in ("intent", "intent_confidence", "slots", "flow") if c in conversations.c]
    if not wanted:
        return {}
    row = conn.execute(
        select(*(conversations.c[c] for c in wanted)).where(conversations.c.id == conversation_id)
    ).first()
    if row is None:
        return {}
    out = dict(row._mapping)
    if isinstance(out.get("slots"), str):
        out["slots"] = _json(out["slots"])
    return out


def agent_names(conn: Connection, agent_ids: Sequence[str]) -> dict[str, str]:
    """The names of the people who sign in as these agents."""
    ids = [a for a in set(agent_ids) if a]
    if not ids:
        return {}
    rows = conn.execute(select(users.c.agent_id, users.c.name).where(users.c.agent_id.in_(ids)))
    return {r.agent_id: r.name for r in rows}
