"""Read queries for journeys: visitors, customers, their sessions and events, paginated.

Pagination is by keyset (an opaque cursor encoding the last row's sort key), so a page
costs the same however deep it is.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from opportune.store.schema import customer_identifiers, customers, events, sessions, visitors

MAX_LIMIT = 500


class BadCursor(ValueError):
    pass


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as exc:
        raise BadCursor("cursor is not one this API gave out") from exc
    if not isinstance(key, list) or len(key) != size:
        raise BadCursor("cursor is not one this API gave out")
    return key


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _camel(row: Any) -> dict[str, Any]:
    out = {}
    for key, value in row._mapping.items():
        head, *rest = key.split("_")
        out[head + "".join(p.title() for p in rest)] = value
    return out


def get_visitor(conn: Connection, visitor_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(visitors).where(visitors.c.id == visitor_id)).first()
    return _camel(row) if row else None


def session_page(
    conn: Connection,
    *,
    visitor_id: str | None = None,
    customer_id: str | None = None,
    limit: int,
    cursor: str | None,
) -> Page:
    """Sessions newest first, of one visitor or of one customer (all its devices)."""
    q = select(sessions)
    if visitor_id is not None:
        q = q.where(sessions.c.visitor_id == visitor_id)
    if customer_id is not None:
        q = q.where(sessions.c.customer_id == customer_id)
    if cursor:
        started, sid = decode_cursor(cursor, 2)
        q = q.where(
            or_(
                sessions.c.started_at < started,
                and_(sessions.c.started_at == started, sessions.c.id < sid),
            )
        )
    rows = conn.execute(
        q.order_by(sessions.c.started_at.desc(), sessions.c.id.desc()).limit(limit + 1)
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        [_camel(r) for r in rows],
        encode_cursor([rows[-1].started_at, rows[-1].id]) if more else None,
    )


def get_session(conn: Connection, session_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(sessions).where(sessions.c.id == session_id)).first()
    return _camel(row) if row else None


def event_page(
    conn: Connection, session: dict[str, Any], *, limit: int, cursor: str | None
) -> Page:
    """A session's events in time order; one range of the events primary key."""
    q = select(events).where(
        events.c.visitor_id == session["visitorId"],
        events.c.ts >= session["startedAt"],
        events.c.ts <= session["lastEventAt"],
        events.c.session_id == session["id"],
    )
    if cursor:
        ts, received, seq, eid = decode_cursor(cursor, 4)
        q = q.where(
            or_(
                events.c.ts > ts,
                and_(events.c.ts == ts, events.c.received_at > received),
                and_(events.c.ts == ts, events.c.received_at == received, events.c.seq > seq),
                and_(
                    events.c.ts == ts,
                    events.c.received_at == received,
                    events.c.seq == seq,
                    events.c.event_id > eid,
                ),
            )
        )
    rows = conn.execute(
        q.order_by(events.c.ts, events.c.received_at, events.c.seq, events.c.event_id).limit(
            limit + 1
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for r in rows:
        item = _camel(r)
        item["data"] = json.loads(r.data) if r.data else None
        items.append(item)
    last = rows[-1] if rows else None
    nxt = (
        encode_cursor([last.ts, last.received_at, last.seq, last.event_id])
        if more and last
        else None
    )
    return Page(items, nxt)


def get_customer(conn: Connection, customer_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(customers).where(customers.c.id == customer_id)).first()
    if row is None:
        return None
    idents = conn.execute(
        select(customer_identifiers.c.kind, customer_identifiers.c.value)
        .where(customer_identifiers.c.customer_id == customer_id)
        .order_by(customer_identifiers.c.kind)
    ).all()
    vis = (
        conn.execute(
            select(visitors.c.id)
            .where(visitors.c.customer_id == customer_id)
            .order_by(visitors.c.first_seen_at)
        )
        .scalars()
        .all()
    )
    out = _camel(row)
    out["identifiers"] = [{"kind": i.kind, "value": i.value} for i in idents]
    out["visitors"] = list(vis)
    return out


def find_customers(conn: Connection, kind: str, value: str) -> list[dict[str, str]]:
    """Customers holding an identifier (one per site at most)."""
    rows = conn.execute(
        select(customer_identifiers.c.customer_id, customer_identifiers.c.site_id).where(
            customer_identifiers.c.kind == kind, customer_identifiers.c.value == value
        )
    ).all()
    return [{"id": r.customer_id, "site": r.site_id} for r in rows]
