"""Outcome attributions in the database: the records posted from outside, their touchpoints,
and the lookups that match them to the interactions they credit.

What an attribution is worth to an interaction (value × share within the window) is
``core.kpis.credit``'s decision; this module only stores and reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from opportune.core.kpis import Touchpoint
from opportune.store.schema import attribution_touchpoints, interactions, outcome_attributions

_CHUNK = 500  # ids per IN (...)


@dataclass(frozen=True, slots=True)
class AttributionRecord:
    """One accepted record, as stored: ``customer_id`` or ``external_contact_id`` names who."""

    id: str
    outcome_id: str
    customer_id: str | None
    external_contact_id: str | None
    value: float | None
    created_ms: int
    touchpoints: tuple[Touchpoint, ...]


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield list(ids[i : i + _CHUNK])


def known_ids(conn: Connection, ids: Sequence[str]) -> set[str]:
    """Which of these record ids are stored already (a repeat is a duplicate)."""
    out: set[str] = set()
    for chunk in _chunks(ids):
        out.update(
            conn.execute(
                select(outcome_attributions.c.id).where(outcome_attributions.c.id.in_(chunk))
            ).scalars()
        )
    return out


def handled_by(conn: Connection, conversation_ids: Sequence[str]) -> dict[str, str | None]:
    """The agent each known conversation was assigned to (None: never assigned); an
    unknown conversation is absent."""
    out: dict[str, str | None] = {}
    for chunk in _chunks(sorted(set(conversation_ids))):
        for r in conn.execute(
            select(interactions.c.id, interactions.c.agent_id).where(interactions.c.id.in_(chunk))
        ):
            out[r.id] = r.agent_id
    return out


def insert(
    conn: Connection, records: Iterable[AttributionRecord], *, received_ms: int
) -> set[str]:
    """Store the records the database does not hold yet; the ids it stored. A record
    another process stored meanwhile (after this request checked) is skipped by the
    database's key, not answered with an error: it is a duplicate like any other."""
    stored: set[str] = set()
    upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    for rec in records:
        done = conn.execute(
            upsert(outcome_attributions)
            .values(
                id=rec.id,
                outcome_id=rec.outcome_id,
                customer_id=rec.customer_id,
                external_contact_id=rec.external_contact_id,
                value=rec.value,
                created_at=rec.created_ms,
                received_at=received_ms,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(outcome_attributions.c.id)  # rowcount is -1 here on psycopg 3
        )
        if done.first() is None:
            continue
        stored.add(rec.id)
        for t in rec.touchpoints:
            conn.execute(
                attribution_touchpoints.insert().values(
                    attribution_id=rec.id,
                    conversation_id=t.conversation_id,
                    agent_id=t.agent_id,
                    medium=t.medium,
                    value_share=t.value_share,
                    at=t.at_ms,
                )
            )
    return stored
