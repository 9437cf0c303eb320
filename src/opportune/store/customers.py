"""Customers in the database: lookups shared by identify and GDPR, the identity log, and
admin merge and split (``store/identify`` carries out identify events, ``store/gdpr``
export, erasure and retention).

Every function takes a SQLAlchemy ``Connection`` inside the caller's transaction and runs
the same on SQLite and PostgreSQL. The decisions are ``core.identity``'s; this module
reads what they need and carries them out, leaving an ``identity_log`` row for each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from opportune.core.identity import Customer, Identifier, plan_merge
from opportune.store.schema import customer_identifiers, customers, identity_log, sessions, visitors

_CHUNK = 500  # rows per statement when deleting or moving in bulk


class CustomerNotFound(LookupError):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"customer {customer_id!r} not found")
        self.customer_id = customer_id


class MergeRefused(ValueError):
    """An admin merge that the rules do not allow; the message says why."""


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


def load_customer(conn: Connection, customer_id: str) -> Customer:
    rows = conn.execute(
        select(customer_identifiers.c.kind, customer_identifiers.c.value).where(
            customer_identifiers.c.customer_id == customer_id
        )
    ).all()
    return Customer(customer_id, frozenset(Identifier(r.kind, r.value) for r in rows))


def log_entry(
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
    plan = plan_merge(load_customer(conn, source_id), load_customer(conn, target_id))
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
    for table in (visitors, sessions, customer_identifiers):
        conn.execute(
            update(table).where(table.c.customer_id == source_id).values(customer_id=target_id)
        )
    # The target's own traits win where both have one.
    _set(conn, target_id, now_ms, traits={**(src.traits or {}), **(dst.traits or {})})
    _set(conn, source_id, now_ms, merged_into=target_id)
    log_id = log_entry(
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
        for chunk in chunks(ids):
            conn.execute(update(table).where(table.c.id.in_(chunk)).values(customer_id=source))
    _set(conn, target, now_ms, traits=detail["targetTraits"])
    _set(conn, source, now_ms, merged_into=None)
    split_id = log_entry(
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


def _set(conn: Connection, customer_id: str, now_ms: int, **values: Any) -> None:
    conn.execute(
        update(customers).where(customers.c.id == customer_id).values(**values, updated_at=now_ms)
    )


def chunks(ids: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]
