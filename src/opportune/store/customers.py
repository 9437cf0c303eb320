"""Customers in the database: identify, admin merge and split, GDPR export, erase, purge.

Every function takes a SQLAlchemy ``Connection`` inside the caller's transaction and runs
the same on SQLite and PostgreSQL. The decisions are ``core.identity``'s; this module
reads what they need and carries them out, leaving an ``identity_log`` row for each.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from opportune.core.identity import (
    Customer,
    Identifier,
    decide,
    normalise,
    plan_merge,
)
from opportune.store.schema import (
    action_events,
    customer_identifiers,
    customers,
    erasures,
    events,
    identity_log,
    outcome_achievements,
    segment_changes,
    sessions,
    visitors,
    webhook_deliveries,
)

# Tables of facts recorded per visit: they go with the visit.
FACT_TABLES = (segment_changes, outcome_achievements, action_events, webhook_deliveries)
_CHUNK = 500  # rows per statement when deleting or moving in bulk


class CustomerNotFound(LookupError):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"customer {customer_id!r} not found")
        self.customer_id = customer_id


class MergeRefused(ValueError):
    """An admin merge that the rules do not allow; the message says why."""


@dataclass(frozen=True, slots=True)
class IdentifyOutcome:
    customer_id: str | None  # the customer the visitor is linked to now
    refusals: list[str] = field(default_factory=list)  # reasons to report on the event


def _new_id() -> str:
    return uuid.uuid4().hex


def resolve(conn: Connection, customer_id: str) -> str:
    """Follow ``merged_into`` to the customer that stands for ``customer_id`` now."""
    seen = set()
    current = customer_id
    while current not in seen:
        seen.add(current)
        row = conn.execute(select(customers.c.merged_into).where(customers.c.id == current)).first()
        if row is None or row.merged_into is None:
            return current
        current = row.merged_into
    return current


def _load_customer(conn: Connection, customer_id: str) -> Customer:
    rows = conn.execute(
        select(customer_identifiers.c.kind, customer_identifiers.c.value).where(
            customer_identifiers.c.customer_id == customer_id
        )
    ).all()
    return Customer(customer_id, frozenset(Identifier(r.kind, r.value) for r in rows))


def _owners(conn: Connection, site_id: str, idents: Sequence[Identifier]) -> dict[Identifier, str]:
    if not idents:
        return {}
    rows = conn.execute(
        select(
            customer_identifiers.c.kind,
            customer_identifiers.c.value,
            customer_identifiers.c.customer_id,
        ).where(
            customer_identifiers.c.site_id == site_id,
            or_(
                *[
                    and_(
                        customer_identifiers.c.kind == i.kind,
                        customer_identifiers.c.value == i.value,
                    )
                    for i in idents
                ]
            ),
        )
    ).all()
    return {Identifier(r.kind, r.value): r.customer_id for r in rows}


def _log(
    conn: Connection,
    *,
    at: int,
    site_id: str,
    kind: str,
    visitor_id: str | None = None,
    customer_id: str | None = None,
    other: str | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    result = conn.execute(
        insert(identity_log).values(
            at=at,
            site_id=site_id,
            kind=kind,
            visitor_id=visitor_id,
            customer_id=customer_id,
            other_customer_id=other,
            detail=detail or {},
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def apply_identify(
    conn: Connection,
    *,
    site_id: str,
    visitor_id: str,
    identity: Any,
    traits: dict[str, Any],
    now_ms: int,
    default_region: str,
) -> IdentifyOutcome:
    """Carry out one identify event for a visitor whose row exists (same transaction).

    ``identity`` has ``email``, ``phone`` and ``customer_id`` attributes (the wire model's
    ``Identity``). Returns the customer the visitor is linked to afterwards.
    """
    idents, refused = normalise(
        email=identity.email,
        phone=identity.phone,
        customer_id=identity.customer_id,
        default_region=default_region,
    )
    reasons = [r.reason for r in refused]
    for r in refused:
        _log(
            conn,
            at=now_ms,
            site_id=site_id,
            kind="refused",
            visitor_id=visitor_id,
            detail={"kind": r.kind, "reason": r.reason.split(" ", 1)[0] + " refused"},
        )
    row = conn.execute(select(visitors.c.customer_id).where(visitors.c.id == visitor_id)).first()
    linked = resolve(conn, row.customer_id) if row and row.customer_id else None
    if not idents:
        return IdentifyOutcome(linked, reasons)
    current = _load_customer(conn, linked) if linked else None
    owner_ids = {i: resolve(conn, c) for i, c in _owners(conn, site_id, idents).items()}
    owners = {i: _load_customer(conn, c) for i, c in owner_ids.items()}
    decision = decide(current, owners, idents)
    target = decision.customer
    if target is None:
        target = _new_id()
        conn.execute(
            insert(customers).values(
                id=target, site_id=site_id, created_at=now_ms, updated_at=now_ms, traits={}
            )
        )
        _log(
            conn,
            at=now_ms,
            site_id=site_id,
            kind="new_customer",
            visitor_id=visitor_id,
            customer_id=target,
        )
    for ident in decision.attach:
        if not _attach(conn, site_id, target, ident, now_ms):
            # Another transaction (another server process) took it first: that customer
            # is the one, as if we had seen it at the start.
            winner = resolve(conn, _owners(conn, site_id, [ident])[ident])
            _log(
                conn,
                at=now_ms,
                site_id=site_id,
                kind="conflict",
                visitor_id=visitor_id,
                customer_id=winner,
                other=target,
                detail={"kind": ident.kind, "reason": "taken concurrently"},
            )
            if decision.customer is None:
                _drop_if_empty(conn, target)
                target = winner
    for conflict in decision.conflicts:
        _log(
            conn,
            at=now_ms,
            site_id=site_id,
            kind="conflict",
            visitor_id=visitor_id,
            customer_id=target,
            other=conflict.owner,
            detail={"kind": conflict.identifier.kind, "reason": conflict.reason},
        )
    if traits:
        _merge_traits(conn, target, traits, now_ms)
    if linked != target:
        conn.execute(update(visitors).where(visitors.c.id == visitor_id).values(customer_id=target))
        # An anonymous device's history joins the customer; visits already credited to
        # someone else (a shared device) stay theirs.
        conn.execute(
            update(sessions)
            .where(sessions.c.visitor_id == visitor_id, sessions.c.customer_id.is_(None))
            .values(customer_id=target)
        )
        kind = "switch" if decision.switched_from else "link"
        _log(
            conn,
            at=now_ms,
            site_id=site_id,
            kind=kind,
            visitor_id=visitor_id,
            customer_id=target,
            other=decision.switched_from,
        )
    return IdentifyOutcome(target, reasons)


def _attach(
    conn: Connection, site_id: str, customer_id: str, ident: Identifier, now_ms: int
) -> bool:
    """Insert an identifier unless it exists; True if this call inserted it."""
    exists = conn.execute(
        select(customer_identifiers.c.id).where(
            customer_identifiers.c.site_id == site_id,
            customer_identifiers.c.kind == ident.kind,
            customer_identifiers.c.value == ident.value,
        )
    ).first()
    if exists is not None:
        return False
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(customer_identifiers).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(customer_identifiers).on_conflict_do_nothing()
    inserted = conn.execute(
        stmt.values(
            customer_id=customer_id,
            site_id=site_id,
            kind=ident.kind,
            value=ident.value,
            created_at=now_ms,
        ).returning(customer_identifiers.c.id)
    ).first()
    # (Not rowcount: psycopg reports -1 for this statement.)
    return inserted is not None


def _drop_if_empty(conn: Connection, customer_id: str) -> None:
    held = conn.execute(
        select(func.count())
        .select_from(customer_identifiers)
        .where(customer_identifiers.c.customer_id == customer_id)
    ).scalar_one()
    if not held:
        conn.execute(delete(customers).where(customers.c.id == customer_id))


def _merge_traits(conn: Connection, customer_id: str, traits: dict[str, Any], now_ms: int) -> None:
    old = conn.execute(select(customers.c.traits).where(customers.c.id == customer_id)).scalar()
    conn.execute(
        update(customers)
        .where(customers.c.id == customer_id)
        .values(traits={**(old or {}), **traits}, updated_at=now_ms)
    )


def get_customer_row(conn: Connection, customer_id: str) -> Any:
    row = conn.execute(select(customers).where(customers.c.id == customer_id)).first()
    if row is None:
        raise CustomerNotFound(customer_id)
    return row


@dataclass(frozen=True, slots=True)
class MergePreview:
    source: str
    target: str
    visitors: int
    sessions: int
    identifiers: list[dict[str, str]]
    blocking: list[str]


def preview_merge(conn: Connection, source_id: str, target_id: str) -> MergePreview:
    """What merging ``source`` into ``target`` would move, and what would block it."""
    get_customer_row(conn, source_id)
    get_customer_row(conn, target_id)
    plan = plan_merge(_load_customer(conn, source_id), _load_customer(conn, target_id))
    n_visitors = conn.execute(
        select(func.count()).select_from(visitors).where(visitors.c.customer_id == source_id)
    ).scalar_one()
    n_sessions = conn.execute(
        select(func.count()).select_from(sessions).where(sessions.c.customer_id == source_id)
    ).scalar_one()
    blocking = list(plan.blocking)
    if get_customer_row(conn, source_id).merged_into is not None:
        blocking.append("the source was already merged into another customer")
    return MergePreview(
        source_id,
        target_id,
        n_visitors,
        n_sessions,
        [{"kind": i.kind, "value": i.value} for i in plan.identifiers],
        blocking,
    )


def merge(conn: Connection, source_id: str, target_id: str, now_ms: int) -> tuple[int, list[str]]:
    """Fold ``source`` into ``target``; returns the log id (for a split) and the visitors
    whose live state must be forgotten."""
    preview = preview_merge(conn, source_id, target_id)
    if preview.blocking:
        raise MergeRefused("; ".join(preview.blocking))
    src = get_customer_row(conn, source_id)
    dst = get_customer_row(conn, target_id)
    moved_visitors = list(
        conn.execute(select(visitors.c.id).where(visitors.c.customer_id == source_id)).scalars()
    )
    moved_sessions = list(
        conn.execute(select(sessions.c.id).where(sessions.c.customer_id == source_id)).scalars()
    )
    moved_idents = list(
        conn.execute(
            select(customer_identifiers.c.id).where(customer_identifiers.c.customer_id == source_id)
        ).scalars()
    )
    conn.execute(
        update(visitors).where(visitors.c.customer_id == source_id).values(customer_id=target_id)
    )
    conn.execute(
        update(sessions).where(sessions.c.customer_id == source_id).values(customer_id=target_id)
    )
    conn.execute(
        update(customer_identifiers)
        .where(customer_identifiers.c.customer_id == source_id)
        .values(customer_id=target_id)
    )
    # The target's own traits win where both have one.
    conn.execute(
        update(customers)
        .where(customers.c.id == target_id)
        .values(traits={**(src.traits or {}), **(dst.traits or {})}, updated_at=now_ms)
    )
    conn.execute(
        update(customers)
        .where(customers.c.id == source_id)
        .values(merged_into=target_id, updated_at=now_ms)
    )
    log_id = _log(
        conn,
        at=now_ms,
        site_id=dst.site_id,
        kind="admin_merge",
        customer_id=target_id,
        other=source_id,
        detail={
            "visitors": moved_visitors,
            "sessions": moved_sessions,
            "identifiers": moved_idents,
            "targetTraits": dst.traits or {},
        },
    )
    return log_id, moved_visitors


class SplitRefused(ValueError):
    pass


def split(conn: Connection, log_id: int, now_ms: int) -> tuple[int, list[str]]:
    """Undo an admin merge exactly: what moved goes back; returns the split's log id and the
    visitors whose live state must be forgotten."""
    row = conn.execute(select(identity_log).where(identity_log.c.id == log_id)).first()
    if row is None:
        raise LookupError(f"identity log entry {log_id} not found")
    if row.kind != "admin_merge":
        raise SplitRefused(f"entry {log_id} is a {row.kind!r}, not an admin merge")
    if row.reverted_by is not None:
        raise SplitRefused(f"merge {log_id} was already split (entry {row.reverted_by})")
    source, target, detail = row.other_customer_id, row.customer_id, row.detail
    for table, ids in (
        (visitors, detail["visitors"]),
        (sessions, detail["sessions"]),
        (customer_identifiers, detail["identifiers"]),
    ):
        for chunk in _chunks(ids):
            conn.execute(update(table).where(table.c.id.in_(chunk)).values(customer_id=source))
    conn.execute(
        update(customers)
        .where(customers.c.id == target)
        .values(traits=detail["targetTraits"], updated_at=now_ms)
    )
    conn.execute(
        update(customers)
        .where(customers.c.id == source)
        .values(merged_into=None, updated_at=now_ms)
    )
    split_id = _log(
        conn,
        at=now_ms,
        site_id=row.site_id,
        kind="split",
        customer_id=source,
        other=target,
        detail={"merge": log_id},
    )
    conn.execute(
        update(identity_log).where(identity_log.c.id == log_id).values(reverted_by=split_id)
    )
    return split_id, list(detail["visitors"])


def _chunks(ids: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


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
        for chunk in _chunks(sids):
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
    }


@dataclass(frozen=True, slots=True)
class Erased:
    customers: int
    identifiers: int
    visitors: int
    sessions: int
    events: int
    visitor_ids: list[str]


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
    n_events = 0
    for s in sess:
        n_events += conn.execute(
            delete(events).where(events.c.visitor_id == s.visitor_id, events.c.session_id == s.id)
        ).rowcount
    n_sessions = 0
    for chunk in _chunks([s.id for s in sess]):
        # What the rules and action maps recorded of these visits goes with them.
        for table in FACT_TABLES:
            conn.execute(delete(table).where(table.c.session_id.in_(chunk)))
        n_sessions += conn.execute(delete(sessions).where(sessions.c.id.in_(chunk))).rowcount
    # A shared device keeps the visits of its other people; an emptied one goes.
    n_visitors = 0
    for vid in vis:
        left = conn.execute(
            select(func.count()).select_from(sessions).where(sessions.c.visitor_id == vid)
        ).scalar_one()
        if left:
            conn.execute(update(visitors).where(visitors.c.id == vid).values(customer_id=None))
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
    counts = Erased(n_customers, n_idents, n_visitors, n_sessions, n_events, vis)
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
            },
        )
    )
    return counts


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
