"""GDPR and retention in the database: export everything held about a customer, erase
a customer irreversibly, and purge what is older than the retention period."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from opportune.store.conversations import erase as erase_conversations
from opportune.store.conversations import transcripts
from opportune.store.customers import chunks, get_customer_row
from opportune.store.rollups import recount_quarters, visit_quarters
from opportune.store.schema import (
    action_events,
    customer_identifiers,
    customers,
    erasures,
    event_ids,
    events,
    identity_log,
    interactions,
    outcome_achievements,
    segment_changes,
    sessions,
    visitors,
    webhook_deliveries,
)

# Tables of facts recorded per visit: they go with the visit.
FACT_TABLES = (segment_changes, outcome_achievements, action_events, webhook_deliveries)


def _rows(result: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]


def export_customer(conn: Connection, customer_id: str) -> dict[str, Any]:
    """Everything held about a customer: a JSON-serialisable document (GDPR access)."""
    cust = get_customer_row(conn, customer_id)
    idents = _rows(
        conn.execute(
            select(
                customer_identifiers.c.kind,
                customer_identifiers.c.value,
                customer_identifiers.c.created_at,
            ).where(customer_identifiers.c.customer_id == customer_id)
        )
    )
    vis = _rows(conn.execute(select(visitors).where(visitors.c.customer_id == customer_id)))
    sess = _rows(
        conn.execute(
            select(sessions)
            .where(sessions.c.customer_id == customer_id)
            .order_by(sessions.c.started_at)
        )
    )
    evs: list[dict[str, Any]] = []
    for s in sess:
        evs += _rows(
            conn.execute(
                select(events)
                .where(events.c.visitor_id == s["visitor_id"], events.c.session_id == s["id"])
                .order_by(events.c.ts, events.c.received_at, events.c.seq)
            )
        )
    sids = [x["id"] for x in sess]
    facts: dict[str, list[dict[str, Any]]] = {}
    for name, table in (
        ("segmentChanges", segment_changes),
        ("outcomes", outcome_achievements),
        ("actions", action_events),
    ):
        facts[name] = []
        for chunk in chunks(sids):
            facts[name] += _rows(conn.execute(select(table).where(table.c.session_id.in_(chunk))))
    log = _rows(
        conn.execute(
            select(
                identity_log.c.at,
                identity_log.c.kind,
                identity_log.c.visitor_id,
                identity_log.c.detail,
            )
            .where(
                or_(
                    identity_log.c.customer_id == customer_id,
                    identity_log.c.other_customer_id == customer_id,
                )
            )
            .order_by(identity_log.c.id)
        )
    )
    return {
        "customer": {
            "id": cust.id,
            "site": cust.site_id,
            "createdAt": cust.created_at,
            "traits": cust.traits or {},
        },
        "identifiers": idents,
        "visitors": vis,
        "sessions": sess,
        "events": evs,
        **facts,
        "identityLog": log,
        "conversations": transcripts(conn, [v["id"] for v in vis]),
    }


@dataclass(frozen=True, slots=True)
class Erased:
    customers: int
    identifiers: int
    visitors: int
    sessions: int
    events: int
    visitor_ids: list[str]
    conversations: int = 0


def erase_customer(conn: Connection, customer_id: str, *, now_ms: int) -> Erased:
    """Delete a customer and everything of theirs, irreversibly (GDPR erasure).

    Their visits go, and so do the devices linked to them (with those devices' anonymous
    history). Log entries stay without personal data, and an ``erasures`` row keeps the
    counts only, as proof that the request was carried out.
    """
    cust = get_customer_row(conn, customer_id)
    merged = list(
        conn.execute(select(customers.c.id).where(customers.c.merged_into == customer_id)).scalars()
    )
    ids = [customer_id, *merged]
    vis = list(conn.execute(select(visitors.c.id).where(visitors.c.customer_id.in_(ids))).scalars())
    sess = conn.execute(
        select(sessions.c.id, sessions.c.visitor_id).where(
            or_(
                sessions.c.customer_id.in_(ids),
                and_(
                    sessions.c.visitor_id.in_(vis) if vis else False,
                    sessions.c.customer_id.is_(None),
                ),
            )
        )
    ).all()
    # The chats' words go; the routed interactions stay (agent, wrap-up code, KPI label:
    # what routing learns from) without whom they were with.
    n_conversations = erase_conversations(conn, vis)
    conn.execute(
        update(interactions)
        .where(or_(interactions.c.customer_id.in_(ids), interactions.c.visitor_id.in_(vis)))
        .values(customer_id=None, visitor_id=None)
    )
    # The reports' rollups of the quarters these visits lay in are recounted without them.
    quarters = visit_quarters(conn, [s.id for s in sess])
    n_sessions, n_events = _erase_visits(conn, sess)
    recount_quarters(conn, quarters)
    # A shared device keeps the visits of its other people; an emptied one goes.
    n_visitors = 0
    for vid in vis:
        left = conn.execute(
            select(func.count()).select_from(sessions).where(sessions.c.visitor_id == vid)
        ).scalar_one()
        if left:  # its latest visit may have been theirs (the reports count on it)
            latest = select(func.max(sessions.c.started_at)).where(sessions.c.visitor_id == vid)
            conn.execute(
                update(visitors)
                .where(visitors.c.id == vid)
                .values(customer_id=None, last_visit_at=latest.scalar_subquery())
            )
        else:
            n_visitors += conn.execute(delete(visitors).where(visitors.c.id == vid)).rowcount
    n_idents = conn.execute(
        delete(customer_identifiers).where(customer_identifiers.c.customer_id.in_(ids))
    ).rowcount
    conn.execute(
        update(identity_log)
        .where(or_(identity_log.c.customer_id.in_(ids), identity_log.c.other_customer_id.in_(ids)))
        .values(detail={})
    )
    n_customers = conn.execute(delete(customers).where(customers.c.id.in_(ids))).rowcount
    counts = Erased(n_customers, n_idents, n_visitors, n_sessions, n_events, vis, n_conversations)
    conn.execute(
        insert(erasures).values(
            at=now_ms,
            site_id=cust.site_id,
            customer_id=customer_id,
            counts={
                "customers": n_customers,
                "identifiers": n_idents,
                "visitors": n_visitors,
                "sessions": n_sessions,
                "events": n_events,
                "conversations": n_conversations,
            },
        )
    )
    return counts


def _erase_visits(conn: Connection, sess: Sequence[Any]) -> tuple[int, int]:
    """Delete these visits (``(id, visitor_id)`` rows), their events with their exactly-once
    keys, and what the rules and action maps recorded of them; ``(sessions, events)``."""
    n_events = 0
    for s in sess:
        # The events' exactly-once keys go with them (they name the visitor).
        conn.execute(
            delete(event_ids).where(
                event_ids.c.visitor_id == s.visitor_id,
                event_ids.c.event_id.in_(
                    select(events.c.event_id).where(
                        events.c.visitor_id == s.visitor_id, events.c.session_id == s.id
                    )
                ),
            )
        )
        n_events += conn.execute(
            delete(events).where(events.c.visitor_id == s.visitor_id, events.c.session_id == s.id)
        ).rowcount
    n_sessions = 0
    for chunk in chunks([s.id for s in sess]):
        # What the rules and action maps recorded of these visits goes with them.
        for table in FACT_TABLES:
            conn.execute(delete(table).where(table.c.session_id.in_(chunk)))
        n_sessions += conn.execute(delete(sessions).where(sessions.c.id.in_(chunk))).rowcount
    return n_sessions, n_events


@dataclass(frozen=True, slots=True)
class Purged:
    events: int
    sessions: int
    visitors: int


def purge_older_than(conn: Connection, cutoff_ms: int) -> Purged:
    """Retention: events and visits that ended before ``cutoff_ms``, and anonymous
    visitors left with nothing. Customers (identified people) are kept."""
    # One day of events per statement: bounded work however large the backlog.
    n_events = 0
    oldest = conn.execute(select(func.min(events.c.ts))).scalar()
    while oldest is not None and oldest < cutoff_ms:
        upper = min(cutoff_ms, oldest + 86_400_000)
        n_events += conn.execute(delete(events).where(events.c.ts < upper)).rowcount
        oldest = upper
    # Keys older than the acceptance window can never be sent again (refused as too old).
    conn.execute(delete(event_ids).where(event_ids.c.ts < cutoff_ms))
    conn.execute(delete(segment_changes).where(segment_changes.c.at < cutoff_ms))
    conn.execute(delete(outcome_achievements).where(outcome_achievements.c.achieved_at < cutoff_ms))
    conn.execute(delete(action_events).where(action_events.c.at < cutoff_ms))
    conn.execute(
        delete(webhook_deliveries).where(
            webhook_deliveries.c.created_at < cutoff_ms, webhook_deliveries.c.status != "pending"
        )
    )
    n_sessions = conn.execute(delete(sessions).where(sessions.c.last_event_at < cutoff_ms)).rowcount
    orphans = select(sessions.c.id).where(sessions.c.visitor_id == visitors.c.id).exists()
    n_visitors = conn.execute(
        delete(visitors).where(
            visitors.c.customer_id.is_(None), visitors.c.last_visit_at < cutoff_ms, ~orphans
        )
    ).rowcount
    return Purged(n_events, n_sessions, n_visitors)
