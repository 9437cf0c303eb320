"""Conversations in the database: open, append a message exactly once, read after a sequence
number, move the state, heartbeats and read marks, the visitors gone past their grace, and
the transcripts a GDPR export or erasure covers.

Every function takes a ``Connection`` inside the caller's transaction and runs the same on
SQLite and PostgreSQL. A message is stored before anyone is told of it; its ``seq`` is the
conversation's ``next_seq`` taken under the conversation row's write lock, so sequences have
no gaps or repeats however many processes append at once, and a resend of the same client
id is answered with the stored message instead of a second row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from opportune.core.conversations import (
    ENDED,
    ConversationError,
    Draft,
    Move,
    State,
    gone,
    move,
)
from opportune.store.schema import conversation_messages as messages_t
from opportune.store.schema import conversations as conversations_t


class NotFound(LookupError):
    """No conversation with that id (on this site)."""


@dataclass(frozen=True, slots=True)
class Message:
    """A stored message, as every reader sees it."""

    seq: int
    client_id: str
    sender: str
    author: str | None
    text: str
    payload: Mapping[str, Any] | None
    at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.client_id,
            "sender": self.sender,
            "author": self.author,
            "text": self.text,
            "payload": self.payload,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class Appended:
    """The stored message, and whether this request stored it or found it already there."""

    message: Message
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation row, typed."""

    id: str
    site_id: str
    visitor_id: str
    customer_id: str | None
    state: State
    queue: str | None
    agent_id: str | None
    language: str | None
    offer: str | None
    registration: Mapping[str, Any] | None
    created_at: int
    updated_at: int
    last_seq: int
    visitor_seen_at: int
    visitor_read_seq: int
    agent_read_seq: int
    ended_at: int | None
    wrap_up_code: str | None
    rating: int | None
    bot_flow: str | None = None
    bot_state: Mapping[str, Any] | None = None
    intent: str | None = None
    notes: str | None = None

    @property
    def open(self) -> bool:
        """Whether the conversation still runs (not closed or abandoned)."""
        return self.state not in ENDED


def open_conversation(
    conn: Connection,
    *,
    conversation_id: str,
    site_id: str,
    visitor_id: str,
    customer_id: str | None,
    state: State,
    now_ms: int,
    queue: str | None = None,
    language: str | None = None,
    offer: str | None = None,
    registration: Mapping[str, Any] | None = None,
    bot_flow: str | None = None,
) -> Conversation:
    """A new conversation in ``state`` (``bot``, or ``queued`` when there is no bot)."""
    if state not in ("bot", "queued"):
        raise ConversationError(f"a conversation starts with the bot or in the queue, not {state}")
    conn.execute(
        conversations_t.insert().values(
            id=conversation_id,
            site_id=site_id,
            visitor_id=visitor_id,
            customer_id=customer_id,
            state=state,
            queue=queue,
            language=language,
            offer=offer,
            registration=json.dumps(registration) if registration is not None else None,
            created_at=now_ms,
            updated_at=now_ms,
            next_seq=1,
            visitor_seen_at=now_ms,
            visitor_read_seq=0,
            agent_read_seq=0,
            bot_flow=bot_flow,
        )
    )
    return get(conn, conversation_id)


def open_once(conn: Connection, **fields: Any) -> tuple[Conversation, bool]:
    """``open_conversation`` unless a conversation with that id exists already: then that
    one, and ``False`` (the id is derived from the offer, so a second start is the first)."""
    try:
        with conn.begin_nested():
            return open_conversation(conn, **fields), True
    except IntegrityError:
        return get(conn, fields["conversation_id"]), False


def get(conn: Connection, conversation_id: str, *, site_id: str | None = None) -> Conversation:
    """The conversation, or :class:`NotFound` (also when it belongs to another site)."""
    row = conn.execute(
        select(conversations_t).where(conversations_t.c.id == conversation_id)
    ).first()
    if row is None or (site_id is not None and row.site_id != site_id):
        raise NotFound(conversation_id)
    return _conversation(row._mapping)


def _lock(conn: Connection, conversation_id: str) -> Conversation:
    """The conversation, read under its row's write lock.

    A no-op write takes the lock first: on PostgreSQL the row lock, on SQLite the database
    write lock, so a second appender waits here instead of failing its upgrade from a read
    to a write later in the transaction.
    """
    c = conversations_t.c
    done = conn.execute(
        update(conversations_t).where(c.id == conversation_id).values(next_seq=c.next_seq)
    )
    if done.rowcount == 0:
        raise NotFound(conversation_id)
    return get(conn, conversation_id)


def append(
    conn: Connection,
    conversation_id: str,
    message: Draft,
    *,
    now_ms: int,
    author: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Appended:
    """Store ``message`` once: a client id already stored returns the stored message."""
    conv = _lock(conn, conversation_id)
    m = messages_t.c
    existing = conn.execute(
        select(messages_t).where(
            m.conversation_id == conversation_id, m.client_id == message.client_id
        )
    ).first()
    if existing is not None:
        return Appended(_message(existing._mapping), duplicate=True)
    move(conv.state, "send")
    seq = conv.last_seq + 1
    values = {
        "conversation_id": conversation_id,
        "seq": seq,
        "client_id": message.client_id,
        "sender": message.sender,
        "author": author,
        "text": message.text,
        "payload": json.dumps(payload) if payload is not None else None,
        "at": now_ms,
    }
    conn.execute(messages_t.insert().values(**values))
    changes: dict[str, Any] = {"next_seq": seq + 1, "updated_at": now_ms}
    if message.sender == "visitor":
        changes["visitor_seen_at"] = now_ms
    c = conversations_t.c
    conn.execute(update(conversations_t).where(c.id == conversation_id).values(**changes))
    return Appended(_message(values), duplicate=False)


def after(
    conn: Connection, conversation_id: str, seq: int = 0, *, limit: int = 500
) -> list[Message]:
    """Messages with a sequence number above ``seq``, oldest first: what a client that saw
    up to ``seq`` missed."""
    m = messages_t.c
    rows = conn.execute(
        select(messages_t)
        .where(m.conversation_id == conversation_id, m.seq > seq)
        .order_by(m.seq)
        .limit(limit)
    )
    return [_message(r._mapping) for r in rows]


def transition(
    conn: Connection,
    conversation_id: str,
    what: Move,
    *,
    now_ms: int,
    expect: Iterable[State] | None = None,
    seen_before: int | None = None,
    **changes: Any,
) -> Conversation:
    """Apply ``what`` (``core.conversations.move``) with any column ``changes`` (agent, queue,
    wrap-up code, rating), under the row lock; :class:`ConversationError` if refused.

    ``expect`` names the states the caller read the conversation in: if another process
    moved it meanwhile, the move is refused rather than applied to a state nobody saw.
    ``seen_before`` refuses it if the visitor was heard from since (a sweeper's ``leave``).
    """
    conv = _lock(conn, conversation_id)
    if expect is not None and conv.state not in set(expect):
        raise ConversationError(f"the conversation is {conv.state.replace('_', ' ')} now")
    if seen_before is not None and conv.visitor_seen_at >= seen_before:
        raise ConversationError("the visitor is back")
    nxt = move(conv.state, what)
    values: dict[str, Any] = {"state": nxt, "updated_at": now_ms, **changes}
    if nxt in ("closed", "abandoned", "wrap_up") and conv.ended_at is None:
        values["ended_at"] = now_ms
    c = conversations_t.c
    conn.execute(update(conversations_t).where(c.id == conversation_id).values(**values))
    return get(conn, conversation_id)


def seen(conn: Connection, conversation_id: str, *, now_ms: int) -> None:
    """The visitor's heartbeat: still here."""
    c = conversations_t.c
    conn.execute(
        update(conversations_t)
        .where(c.id == conversation_id, c.visitor_seen_at < now_ms)
        .values(visitor_seen_at=now_ms)
    )


def read(conn: Connection, conversation_id: str, *, reader: str, seq: int) -> None:
    """A read receipt: ``reader`` (visitor or agent) has seen everything up to ``seq``.
    Marks only move forward, so a late receipt cannot unread a message."""
    if reader not in ("visitor", "agent"):
        raise ConversationError(f"reader: expected visitor or agent, not {reader!r}")
    c = conversations_t.c
    col = c.visitor_read_seq if reader == "visitor" else c.agent_read_seq
    conn.execute(
        update(conversations_t)
        .where(c.id == conversation_id, col < seq, c.next_seq > seq)
        .values({col.name: seq})
    )


def gone_visitors(conn: Connection, *, now_ms: int, grace_ms: int) -> list[Conversation]:
    """Conversations whose visitor has been silent longer than ``grace_ms``: the sweeper
    moves each with ``leave`` (abandoned, or to wrap-up when an agent was in it)."""
    c = conversations_t.c
    rows = conn.execute(
        select(conversations_t).where(
            c.state.in_(("bot", "queued", "assigned", "active")),
            c.visitor_seen_at < now_ms - grace_ms,
        )
    )
    out = [_conversation(r._mapping) for r in rows]
    return [
        v
        for v in out
        if gone(v.state, last_seen_ms=v.visitor_seen_at, now_ms=now_ms, grace_ms=grace_ms)
    ]


def set_bot(
    conn: Connection, conversation_id: str, *, state: Mapping[str, Any], intent: str | None
) -> None:
    """The bot's state after a turn, and the intent it has understood so far."""
    c = conversations_t.c
    values: dict[str, Any] = {"bot_state": json.dumps(dict(state))}
    if intent is not None:
        values["intent"] = intent
    conn.execute(update(conversations_t).where(c.id == conversation_id).values(**values))


def route_in(
    conn: Connection, conversation_id: str, agent_id: str, *, now_ms: int
) -> Conversation | None:
    """Inside a dispatch pass's transaction: the conversation of a routed interaction moves
    to ``assigned`` with its agent, so the two never disagree. ``None`` when the interaction
    is not a conversation (a call, a REST interaction) or the conversation is not queued."""
    row = conn.execute(
        select(conversations_t.c.state).where(conversations_t.c.id == conversation_id)
    ).first()
    if row is None or row.state != "queued":
        return None
    return transition(conn, conversation_id, "route", now_ms=now_ms, agent_id=agent_id)


def routable(conn: Connection, conversation_id: str) -> bool:
    """Whether a dispatch pass may give this interaction to an agent: any interaction that
    is not a web chat, or a chat still queued (not one its visitor has left meanwhile)."""
    row = conn.execute(
        select(conversations_t.c.state).where(conversations_t.c.id == conversation_id)
    ).first()
    return row is None or row.state == "queued"


def rate(conn: Connection, conversation_id: str, rating: int) -> Conversation:
    """The visitor's rating, once their part is over (ended by them or by the agent)."""
    if not 1 <= rating <= 5:
        raise ConversationError(f"rating: 1 to 5, not {rating}")
    conv = get(conn, conversation_id)
    if conv.state not in ("wrap_up", "closed", "abandoned"):
        raise ConversationError(f"rating: the conversation is {conv.state.replace('_', ' ')}")
    c = conversations_t.c
    conn.execute(update(conversations_t).where(c.id == conversation_id).values(rating=rating))
    return get(conn, conversation_id)


def of_agent(conn: Connection, agent_id: str) -> list[Conversation]:
    """The conversations routed to an agent that still need them (assigned, active, wrap-up)."""
    c = conversations_t.c
    rows = conn.execute(
        select(conversations_t)
        .where(c.agent_id == agent_id, c.state.in_(("assigned", "active", "wrap_up")))
        .order_by(c.created_at, c.id)
    )
    return [_conversation(r._mapping) for r in rows]


def live_in_queues(conn: Connection, queues: Sequence[str]) -> list[Conversation]:
    """The queues' conversations that are not over: a supervisor's monitor."""
    if not queues:
        return []
    c = conversations_t.c
    rows = conn.execute(
        select(conversations_t)
        .where(c.queue.in_(list(queues)), c.state.in_(("queued", "assigned", "active", "wrap_up")))
        .order_by(c.created_at, c.id)
    )
    return [_conversation(r._mapping) for r in rows]


def of_visitors(conn: Connection, visitor_ids: Sequence[str]) -> list[Conversation]:
    """Every conversation of these visitors (a customer's devices), newest first."""
    if not visitor_ids:
        return []
    c = conversations_t.c
    rows = conn.execute(
        select(conversations_t)
        .where(c.visitor_id.in_(list(visitor_ids)))
        .order_by(c.created_at.desc(), c.id)
    )
    return [_conversation(r._mapping) for r in rows]


def transcripts(conn: Connection, visitor_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The GDPR export's part: each conversation of these visitors with all its messages."""
    out = []
    for conv in of_visitors(conn, visitor_ids):
        out.append(
            {
                "id": conv.id,
                "state": conv.state,
                "queue": conv.queue,
                "agent": conv.agent_id,
                "createdAt": conv.created_at,
                "endedAt": conv.ended_at,
                "registration": conv.registration,
                "rating": conv.rating,
                "messages": [m.to_json() for m in after(conn, conv.id, 0, limit=1_000_000)],
            }
        )
    return out


def erase(conn: Connection, visitor_ids: Sequence[str]) -> int:
    """Delete the conversations and messages of these visitors; the count of conversations.

    Erasure removes the words, not the fact that a contact happened: the routed interaction
    (agent, wrap-up code, KPI label) is the routing store's and is kept without them.
    """
    ids = [c.id for c in of_visitors(conn, visitor_ids)]
    for chunk in _chunks(ids, 500):
        conn.execute(delete(messages_t).where(messages_t.c.conversation_id.in_(chunk)))
        conn.execute(delete(conversations_t).where(conversations_t.c.id.in_(chunk)))
    return len(ids)


def _chunks(items: Sequence[str], n: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _message(row: Mapping[str, Any]) -> Message:
    payload = row["payload"]
    return Message(
        seq=row["seq"],
        client_id=row["client_id"],
        sender=row["sender"],
        author=row["author"],
        text=row["text"],
        payload=json.loads(payload) if payload else None,
        at=row["at"],
    )


def _conversation(row: Mapping[str, Any]) -> Conversation:
    reg = row["registration"]
    return Conversation(
        id=row["id"],
        site_id=row["site_id"],
        visitor_id=row["visitor_id"],
        customer_id=row["customer_id"],
        state=row["state"],
        queue=row["queue"],
        agent_id=row["agent_id"],
        language=row["language"],
        offer=row["offer"],
        registration=json.loads(reg) if reg else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_seq=row["next_seq"] - 1,
        visitor_seen_at=row["visitor_seen_at"],
        visitor_read_seq=row["visitor_read_seq"],
        agent_read_seq=row["agent_read_seq"],
        ended_at=row["ended_at"],
        wrap_up_code=row["wrap_up_code"],
        rating=row["rating"],
        bot_flow=row["bot_flow"],
        bot_state=json.loads(row["bot_state"]) if row["bot_state"] else None,
        intent=row["intent"],
        notes=row["notes"],
    )
