"""Identity before the rules: which known customer a batch's identify events link the
visitor to, read ahead of the rules step so that segments see that customer (its stored traits)
on the very event that identifies it.

This is a read. The link itself is made by the writer, in the batch's transaction
(``store.identify.apply_identify``); its outcome stays the truth afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from opportune.core.events import Event
from opportune.core.identity import decide, normalise
from opportune.store.customers import load_customer, resolve
from opportune.store.identify import identifier_owners
from opportune.store.schema import customers


@dataclass(frozen=True, slots=True)
class Linked:
    """A known customer an identify event links the visitor to, as the rules need it."""

    customer_id: str
    traits: dict[str, Any] = field(default_factory=dict)


def identify_indexes(events: Sequence[Event]) -> list[int]:
    """Positions of the identify events that carry an identifier.

    >>> from opportune.core.events import Identity
    >>> identify_indexes([Event(id="a", type="page_view", ts=1),
    ...                   Event(id="b", type="identify", ts=2, identity=Identity(email="x@y.z"))])
    [1]
    """
    return [i for i, ev in enumerate(events) if ev.type == "identify" and ev.identity is not None]


def linked_customers(
    engine: Engine,
    events: Sequence[Event],
    *,
    site_id: str,
    customer_id: str | None,
    default_region: str,
) -> dict[int, Linked]:
    """For each identify event (by index) that links the visitor to a known customer other
    than the one before it, that customer; in batch order, each after the ones before."""
    out: dict[int, Linked] = {}
    current = customer_id
    with engine.connect() as conn:
        for i in identify_indexes(events):
            identity = events[i].identity
            idents, _refused = normalise(
                email=identity.email,
                phone=identity.phone,
                customer_id=identity.customer_id,
                default_region=default_region,
            )
            if not idents:
                continue
            mine = load_customer(conn, resolve(conn, current)) if current else None
            owners = {
                ident: load_customer(conn, resolve(conn, owner))
                for ident, owner in identifier_owners(conn, site_id, idents).items()
            }
            target = decide(mine, owners, idents).customer
            if target is None or target == current:
                continue
            traits = conn.execute(
                select(customers.c.traits).where(customers.c.id == target)
            ).scalar()
            out[i] = Linked(target, dict(traits or {}))
            current = target
    return out
