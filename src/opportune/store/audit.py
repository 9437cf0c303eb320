"""The audit log: every change to the workspace made through the console or the admin API,
written in the transaction of the change itself (a change is never stored unrecorded, nor
recorded unstored), and read newest first by the console's audit page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from opportune.store.schema import audit_log

Action = Literal["create", "update", "delete", "import"]
ACTIONS: Final[tuple[Action, ...]] = ("create", "update", "delete", "import")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: a signed-in user (id and name) or the admin API key (no id)."""

    name: str
    id: str | None = None


API_KEY: Final = Actor(name="admin API key")
UNKNOWN: Final = Actor(name="system")


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    at: int
    actor_id: str | None
    actor_name: str
    action: str
    kind: str
    name: str
    before: Any
    after: Any


def record(
    conn: Connection,
    *,
    at: int,
    actor: Actor,
    action: Action,
    kind: str,
    name: str,
    before: Any,
    after: Any,
) -> None:
    """Append one change (``before``/``after``: the document's JSON, ``None`` where it did not
    exist). Call it in the transaction that makes the change."""
    conn.execute(
        audit_log.insert().values(
            at=at,
            actor_id=actor.id,
            actor_name=actor.name[:128],
            action=action,
            kind=kind,
            name=name,
            before=before,
            after=after,
        )
    )


def changes(
    conn: Connection,
    *,
    limit: int = 50,
    before_id: int | None = None,
    kind: str | None = None,
    name: str | None = None,
) -> list[Change]:
    """Changes newest first, at most ``limit``, older than ``before_id`` when given (the
    next page starts below the last id of this one)."""
    q = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if before_id is not None:
        q = q.where(audit_log.c.id < before_id)
    if kind is not None:
        q = q.where(audit_log.c.kind == kind)
    if name is not None:
        q = q.where(audit_log.c.name == name)
    return [Change(**r._mapping) for r in conn.execute(q)]


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(audit_log)).scalar() or 0)
