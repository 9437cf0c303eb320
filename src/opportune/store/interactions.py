"""Interactions and agents' live state in the database: the routing lifecycle's SQL.

An interaction arrives ``waiting``, a dispatch pass ``assigned`` it (with the decision's
scores, propensity and "why"), and it ends ``ended`` or ``abandoned``. Every function takes
a ``Connection`` inside the caller's transaction and runs the same on SQLite and PostgreSQL;
which agent gets what is decided elsewhere (``core/routing``, ``core/predictive``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Row

from opportune.store.schema import agent_presence_log, agent_state, interactions, queue_presence

# Any constant shared by every server process: one dispatch pass at a time.
DISPATCH_LOCK = 720601


@dataclass(frozen=True, slots=True)
class NewInteraction:
    """An interaction as it arrives, before any routing."""

    id: str
    queue: str
    medium: str
    arm: str
    features: Mapping[str, float]
    language: str | None = None
    priority: int = 0
    customer_id: str | None = None
    visitor_id: str | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    """What a dispatch pass decided for one interaction, as stored with it."""

    interaction_id: str
    agent_id: str
    method: str
    propensity: float
    why: str
    scores: Sequence[tuple[str, float]]
    candidates: Sequence[str]


def get(conn: Connection, interaction_id: str) -> Row[Any] | None:
    return conn.execute(select(interactions).where(interactions.c.id == interaction_id)).first()


def exists(conn: Connection, interaction_id: str) -> bool:
    found = conn.execute(select(interactions.c.id).where(interactions.c.id == interaction_id))
    return found.first() is not None


def ended_count(conn: Connection, customer_id: str) -> int:
    """How many interactions of this customer ended (abandoned ones do not count)."""
    return int(
        conn.execute(
            select(func.count()).where(
                interactions.c.customer_id == customer_id, interactions.c.status == "ended"
            )
        ).scalar_one()
    )


def insert(conn: Connection, new: NewInteraction, *, now_ms: int) -> None:
    conn.execute(
        interactions.insert().values(
            id=new.id,
            queue=new.queue,
            medium=new.medium,
            language=new.language,
            priority=new.priority,
            customer_id=new.customer_id,
            visitor_id=new.visitor_id,
            features=json.dumps(dict(new.features)),
            status="waiting",
            arrived_at=now_ms,
            arm=new.arm,
        )
    )


def finish(
    conn: Connection,
    interaction_id: str,
    *,
    status: str,
    now_ms: int,
    wrap_up_code: str | None = None,
) -> None:
    """End (``ended``) or give up (``abandoned``) an interaction."""
    conn.execute(
        update(interactions)
        .where(interactions.c.id == interaction_id)
        .values(status=status, ended_at=now_ms, wrap_up_code=wrap_up_code)
    )


def release_agent(conn: Connection, agent_id: str, *, now_ms: int) -> None:
    """The agent is idle from now when this was their last assigned interaction."""
    left = conn.execute(
        select(func.count()).where(
            interactions.c.agent_id == agent_id, interactions.c.status == "assigned"
        )
    ).scalar_one()
    if not left:
        conn.execute(
            update(agent_state)
            .where(agent_state.c.agent_id == agent_id)
            .values(idle_since=now_ms, updated_at=now_ms)
        )


def set_presence(conn: Connection, agent_id: str, presence: str, *, now_ms: int) -> None:
    """The agent's presence from now on, and its row in the history (occupancy reads it)."""
    conn.execute(
        agent_presence_log.insert().values(agent_id=agent_id, presence=presence, at=now_ms)
    )
    done = conn.execute(
        update(agent_state)
        .where(agent_state.c.agent_id == agent_id)
        .values(presence=presence, updated_at=now_ms)
    )
    if done.rowcount == 0:
        conn.execute(
            agent_state.insert().values(
                agent_id=agent_id,
                presence=presence,
                idle_since=now_ms,
                last_assigned=0,
                updated_at=now_ms,
            )
        )


def agent_states(conn: Connection) -> dict[str, Row[Any]]:
    return {r.agent_id: r for r in conn.execute(select(agent_state))}


def agent_loads(conn: Connection) -> dict[str, dict[str, int]]:
    """Assigned interactions per agent and medium."""
    load: dict[str, dict[str, int]] = {}
    for agent_id, medium, n in conn.execute(
        select(interactions.c.agent_id, interactions.c.medium, func.count())
        .where(interactions.c.status == "assigned")
        .group_by(interactions.c.agent_id, interactions.c.medium)
    ):
        load.setdefault(agent_id, {})[medium] = int(n)
    return load


def lock_dispatch(conn: Connection) -> None:
    """Serialise dispatch passes across processes (PostgreSQL; SQLite has one writer)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SELECT pg_advisory_xact_lock({DISPATCH_LOCK})"))


def waiting(conn: Connection) -> list[Row[Any]]:
    return list(conn.execute(select(interactions).where(interactions.c.status == "waiting")))


def waiting_count(conn: Connection) -> int:
    return int(
        conn.execute(select(func.count()).where(interactions.c.status == "waiting")).scalar_one()
    )


def hold(conn: Connection, interaction_id: str, *, since_ms: int) -> None:
    """Remember when the interaction was first held back for a better agent."""
    conn.execute(
        update(interactions).where(interactions.c.id == interaction_id).values(held_since=since_ms)
    )


def assign(conn: Connection, a: Assignment, *, now_ms: int) -> bool:
    """Store the decision with the interaction (if it still waits) and the agent's turn;
    ``False`` when it no longer waited (another pass took it: on SQLite two passes are not
    serialised by a lock, so the second must not announce what it did not do)."""
    done = conn.execute(
        update(interactions)
        .where(interactions.c.id == a.interaction_id, interactions.c.status == "waiting")
        .values(
            status="assigned",
            agent_id=a.agent_id,
            assigned_at=now_ms,
            method=a.method,
            propensity=a.propensity,
            scores=json.dumps([list(s) for s in a.scores]),
            why=a.why[:500],
            candidates=json.dumps(list(a.candidates)),
        )
    )
    if not done.rowcount:
        return False
    conn.execute(
        update(agent_state)
        .where(agent_state.c.agent_id == a.agent_id)
        .values(last_assigned=now_ms, updated_at=now_ms)
    )
    return True


def since(conn: Connection, queue: str, since_ms: int) -> list[Row[Any]]:
    """The queue's interactions arrived from ``since_ms``: times and status (service)."""
    return list(
        conn.execute(
            select(
                interactions.c.arrived_at,
                interactions.c.assigned_at,
                interactions.c.ended_at,
                interactions.c.status,
            ).where(interactions.c.queue == queue, interactions.c.arrived_at >= since_ms)
        )
    )


def requeue(conn: Connection, interaction_id: str, *, queue: str | None = None) -> str | None:
    """Back to waiting (declined, transferred): the agent it had, whose slot is free again,
    or ``None``. ``queue``: waiting in another queue from now (a transfer)."""
    row = get(conn, interaction_id)
    if row is None or row.status not in ("waiting", "assigned"):
        return None
    values: dict[str, Any] = {
        "status": "waiting",
        "agent_id": None,
        "assigned_at": None,
        "held_since": None,
    }
    if queue is not None:
        values["queue"] = queue
    conn.execute(update(interactions).where(interactions.c.id == interaction_id).values(**values))
    return str(row.agent_id) if row.agent_id else None


def set_queue_presence(
    conn: Connection, queue: str, *, available: int, busy: int, waiting: int, now_ms: int
) -> None:
    """What pacing reads of a queue (``engine/engagement.QueueBoard``): agents present,
    chat slots busy and chats waiting."""
    values = {
        "agents_available": available,
        "busy_slots": busy,
        "waiting": waiting,
        "updated_at": now_ms,
    }
    # One statement: two agents becoming available at once must not both insert the row.
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(queue_presence).values(queue=queue, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["queue"], set_=values))


def waiting_in(conn: Connection, queue: str) -> list[Row[Any]]:
    """The queue's waiting interactions (id, priority, arrival): for a place in the queue."""
    i = interactions.c
    return list(
        conn.execute(
            select(i.id, i.priority, i.arrived_at).where(i.status == "waiting", i.queue == queue)
        )
    )
