"""Identify events in the database: link a visitor to the customer its identifiers name,
creating, attaching or refusing as ``core.identity.decide`` says (same transaction as
the event's write), with an ``identity_log`` row for each step."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from opportune.core.identity import Identifier, IdentityDecision, decide, normalise
from opportune.store.customers import load_customer, log_entry, resolve
from opportune.store.schema import customer_identifiers, customers, sessions, visitors


@dataclass(frozen=True, slots=True)
class IdentifyOutcome:
    customer_id: str | None  # the customer the visitor is linked to now
    refusals: list[str] = field(default_factory=list)  # reasons to report on the event


@dataclass(frozen=True, slots=True)
class _Event:
    """Where an identify event happened, for its log rows."""

    conn: Connection
    site_id: str
    visitor_id: str
    now_ms: int

    def log(self, kind: str, **kw: Any) -> int:
        return log_entry(
            self.conn,
            at=self.now_ms,
            site_id=self.site_id,
            kind=kind,
            visitor_id=self.visitor_id,
            **kw,
        )


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
    ev = _Event(conn, site_id, visitor_id, now_ms)
    idents, refused = normalise(
        email=identity.email,
        phone=identity.phone,
        customer_id=identity.customer_id,
        default_region=default_region,
    )
    reasons = [r.reason for r in refused]
    for r in refused:
        ev.log("refused", detail={"kind": r.kind, "reason": r.reason.split(" ", 1)[0] + " refused"})
    row = conn.execute(select(visitors.c.customer_id).where(visitors.c.id == visitor_id)).first()
    linked = resolve(conn, row.customer_id) if row and row.customer_id else None
    if not idents:
        return IdentifyOutcome(linked, reasons)
    current = load_customer(conn, linked) if linked else None
    owner_ids = {i: resolve(conn, c) for i, c in identifier_owners(conn, site_id, idents).items()}
    owners = {i: load_customer(conn, c) for i, c in owner_ids.items()}
    decision = decide(current, owners, idents)
    target = decision.customer if decision.customer is not None else _new_customer(ev)
    target = _attach_all(ev, decision, target)
    for conflict in decision.conflicts:
        ev.log(
            "conflict",
            customer_id=target,
            other=conflict.owner,
            detail={"kind": conflict.identifier.kind, "reason": conflict.reason},
        )
    if traits:
        _merge_traits(conn, target, traits, now_ms)
    if linked != target:
        _link(ev, target, switched_from=decision.switched_from)
    return IdentifyOutcome(target, reasons)


def _new_customer(ev: _Event) -> str:
    target = uuid.uuid4().hex
    ev.conn.execute(
        insert(customers).values(
            id=target, site_id=ev.site_id, created_at=ev.now_ms, updated_at=ev.now_ms, traits={}
        )
    )
    ev.log("new_customer", customer_id=target)
    return target


def _attach_all(ev: _Event, decision: IdentityDecision, target: str) -> str:
    """Attach the decision's identifiers to ``target``; returns the customer the visitor
    belongs to after (another one when it took an identifier of a new customer first)."""
    for ident in decision.attach:
        if not _attach(ev.conn, ev.site_id, target, ident, ev.now_ms):
            # Another transaction (another server process) took it first: that customer
            # is the one, as if we had seen it at the start.
            winner = resolve(ev.conn, identifier_owners(ev.conn, ev.site_id, [ident])[ident])
            ev.log(
                "conflict",
                customer_id=winner,
                other=target,
                detail={"kind": ident.kind, "reason": "taken concurrently"},
            )
            if decision.customer is None:
                _drop_if_empty(ev.conn, target)
                target = winner
    return target


def _link(ev: _Event, target: str, *, switched_from: str | None) -> None:
    conn = ev.conn
    conn.execute(update(visitors).where(visitors.c.id == ev.visitor_id).values(customer_id=target))
    # An anonymous device's history joins the customer; visits already credited to
    # someone else (a shared device) stay theirs.
    conn.execute(
        update(sessions)
        .where(sessions.c.visitor_id == ev.visitor_id, sessions.c.customer_id.is_(None))
        .values(customer_id=target)
    )
    ev.log("switch" if switched_from else "link", customer_id=target, other=switched_from)


def identifier_owners(
    conn: Connection, site_id: str, idents: Sequence[Identifier]
) -> dict[Identifier, str]:
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
