"""Reads of what the rules recorded (segment changes, outcomes) and of a visit's history
as the condition language sees it — to rebuild live state and to estimate audiences."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from opportune.core.assignments import fold_assignments
from opportune.core.conditions import Context
from opportune.core.journey import JourneyEvent
from opportune.store.schema import (
    customers,
    events,
    outcome_achievements,
    segment_changes,
    sessions,
    visitors,
)

# Session columns -> the condition language's attribute names (docs/conditions.md).
SESSION_FACTS = {
    "device_type": "device",
    "browser": "browser",
    "os": "os",
    "country": "country",
    "region": "region",
    "city": "city",
    "locale": "locale",
    "timezone": "timezone",
    "landing_url": "landingUrl",
    "referrer": "referrer",
    "referrer_domain": "referrerDomain",
    "utm_source": "utmSource",
    "utm_medium": "utmMedium",
    "utm_campaign": "utmCampaign",
    "utm_term": "utmTerm",
    "utm_content": "utmContent",
}
# The columns an event is replayed from, as :func:`journey_event` reads them.
EVENT_COLUMNS = (
    events.c.type,
    events.c.ts,
    events.c.url,
    events.c.name,
    events.c.query,
    events.c.data,
    events.c.event_id,
)


def session_facts(row: Any) -> dict[str, Any]:
    """A session row (mapping) as condition attributes."""
    return {name: row[col] for col, name in SESSION_FACTS.items() if row[col] is not None}


# Events are replayed in the order the pipeline processed them: batch by batch as they
# were received, in batch order; not by ts, which skew correction makes differ per batch.


def journey_event(row: Any) -> JourneyEvent:
    data = json.loads(row.data) if row.data else {}
    if row.type == "identify":
        data = {}  # stored without the trait values; those come from the customer row
    return JourneyEvent(row.type, row.ts, row.url, row.name, row.query, data, row.event_id)


def session_history(
    conn: Connection, session_id: str
) -> tuple[Any, list[JourneyEvent], dict[str, Any]] | None:
    """A stored visit: its row, its events in order, its customer's traits."""
    srow = conn.execute(select(sessions).where(sessions.c.id == session_id)).first()
    if srow is None:
        return None
    traits: dict[str, Any] = {}
    if srow.customer_id:
        t = conn.execute(
            select(customers.c.traits).where(customers.c.id == srow.customer_id)
        ).scalar()
        traits = dict(t or {})
    return srow, _events_of(conn, srow), traits


def _events_of(conn: Connection, srow: Any) -> list[JourneyEvent]:
    """A stored visit's events in the order the pipeline processed them (one primary-key
    range of its visitor's)."""
    rows = conn.execute(
        select(*EVENT_COLUMNS)
        .where(
            events.c.visitor_id == srow.visitor_id,
            events.c.ts >= srow.started_at,
            events.c.ts <= srow.last_event_at,
            events.c.session_id == srow.id,
        )
        .order_by(events.c.received_at, events.c.seq, events.c.ts)
    ).all()
    return [journey_event(r) for r in rows]


def recorded_state(conn: Connection, session_id: str) -> tuple[dict[str, int], dict[str, list]]:
    """What was recorded for a visit: segments it is in now (session truth, with since when)
    and outcomes achieved ([at, value])."""
    current: dict[str, int] = {}
    for seg, change, at in conn.execute(
        select(segment_changes.c.segment, segment_changes.c.change, segment_changes.c.at)
        .where(segment_changes.c.session_id == session_id)
        .order_by(segment_changes.c.at, segment_changes.c.id)
    ):
        if change == "left":
            current.pop(seg, None)
        else:
            current.setdefault(seg, at)
    achieved = {
        r.outcome: [r.achieved_at, r.value]
        for r in conn.execute(
            select(
                outcome_achievements.c.outcome,
                outcome_achievements.c.achieved_at,
                outcome_achievements.c.value,
            ).where(outcome_achievements.c.session_id == session_id)
        )
    }
    return current, achieved


def past_outcomes(conn: Connection, visitor_id: str, before_ms: int) -> dict[str, int]:
    """Outcomes achieved by the visitor's visits that started before ``before_ms``."""
    q = (
        select(outcome_achievements.c.outcome, func.count())
        .select_from(
            outcome_achievements.join(sessions, sessions.c.id == outcome_achievements.c.session_id)
        )
        .where(outcome_achievements.c.visitor_id == visitor_id, sessions.c.started_at < before_ms)
        .group_by(outcome_achievements.c.outcome)
    )
    return {name: int(n) for name, n in conn.execute(q)}


def active_assignments(
    conn: Connection, *, visitor_id: str, customer_id: str | None, now_ms: int
) -> dict[str, list[int]]:
    """Customer-scope segments in force for this visitor — or, once identified, for any
    device of its customer: segment -> [since, expires at]."""
    who = segment_changes.c.visitor_id == visitor_id
    if customer_id:
        who = or_(
            who,
            segment_changes.c.customer_id == customer_id,
            segment_changes.c.visitor_id.in_(
                select(visitors.c.id).where(visitors.c.customer_id == customer_id)
            ),
        )
    rows = conn.execute(
        select(segment_changes.c.at, segment_changes.c.segment, segment_changes.c.expires_at)
        .where(and_(segment_changes.c.change == "assigned", who))
        .order_by(segment_changes.c.at)
    )
    return fold_assignments(((at, seg, expires) for at, seg, expires in rows), now_ms)


def sessions_since(
    conn: Connection, since_ms: int, *, site_id: str | None = None, limit: int | None = None
) -> Iterator[tuple[Context, list[JourneyEvent]]]:
    """Stored visits started since ``since_ms``, each as (context, events), for replay.

    Events are read visitor by visitor (one primary-key range each), newest visits first.
    """
    q = select(sessions).where(sessions.c.started_at >= since_ms)
    if site_id:
        q = q.where(sessions.c.site_id == site_id)
    q = q.order_by(sessions.c.started_at.desc())
    if limit:
        q = q.limit(limit)
    for srow in conn.execute(q).all():
        evs = _events_of(conn, srow)
        if not evs:
            continue
        facts = session_facts(srow._mapping)
        if srow.customer_id:
            facts["identified"] = True
        yield (
            Context(facts=facts, visit_number=srow.number, started_at=srow.started_at),
            evs,
        )
