"""Conversations in the running server: every change stored first, then published on the bus,
and a follower that resumes from a sequence number without missing or repeating a message.

The rule that makes reconnects, page loads and restarts safe: a follower subscribes *before*
it reads what it missed from the database, and drops any message at or below the last
sequence it delivered. A message is in the database before it is on the bus, so whatever
the timing, each one reaches the follower exactly once and in order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from opportune.core.conversations import ConversationError, Draft, Move, Sender, State
from opportune.engine.bus import GAP, Bus
from opportune.store import conversations as store
from opportune.store.conversations import Appended, Conversation, Message

T = TypeVar("T")
POOL_THREADS = 8

Event = dict[str, Any]


def channel(conversation_id: str) -> str:
    """The bus channel of one conversation.

    >>> channel("c-42")
    'chat:c-42'
    """
    return f"chat:{conversation_id}"


def message_event(m: Message) -> Event:
    return {"type": "message", "message": m.to_json()}


def state_event(c: Conversation) -> Event:
    return {"type": "state", "state": c.state, "agent": c.agent_id, "queue": c.queue}


class ConversationHub:
    """Open, post, move and follow conversations on one database and one bus."""

    def __init__(self, engine: Engine, bus: Bus, *, grace_ms: int = 120_000) -> None:
        self.engine = engine
        self.bus = bus
        self.grace_ms = grace_ms
        self._inflight: set[asyncio.Future[Any]] = set()
        # Threads of the chat's own, not the loop's default pool: the event writer holds
        # SQLite's write lock while it waits for a default-pool thread to commit, so chat
        # writes queued for that lock in every default thread would stall both for the
        # 30 s busy timeout (seen with 1,000 chats' heartbeats; bench/chat.py).
        self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="opportune-chat")

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn`` in a worker thread, kept track of: a socket that goes away cancels its
        waiter, not the database work, and :meth:`drain` waits for that work before the
        engine is disposed (a connection given back after would never be closed)."""
        fut = asyncio.get_running_loop().run_in_executor(self._pool, fn)
        self._inflight.add(fut)
        fut.add_done_callback(self._inflight.discard)
        return await asyncio.shield(fut)

    async def drain(self) -> None:
        """Wait for the database work in flight (at shutdown)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def tx(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` in one transaction, in a tracked worker thread (:meth:`run`)."""

        def run() -> T:
            with self.engine.begin() as conn:
                return fn(conn)

        return await self.run(run)

    async def publish(self, conversation_id: str, event: Event) -> None:
        """``event`` to every follower of the conversation (after its change committed)."""
        await self.bus.publish(channel(conversation_id), json.dumps(event).encode())

    async def open(self, **fields: Any) -> Conversation:
        """A new conversation (``store.open_conversation``'s fields), announced."""
        conv = await self.tx(lambda conn: store.open_conversation(conn, **fields))
        await self.publish(conv.id, state_event(conv))
        return conv

    async def get(self, conversation_id: str, *, site_id: str | None = None) -> Conversation:
        return await self.tx(lambda conn: store.get(conn, conversation_id, site_id=site_id))

    async def post(
        self,
        conversation_id: str,
        message: Draft,
        *,
        now_ms: int,
        author: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Appended:
        """Store the message (once), then tell every follower. A resend is published again:
        if the process that stored it died before publishing, this is the only time its
        followers hear of it (followers drop what they already had, by sequence)."""
        done = await self.tx(
            lambda conn: store.append(
                conn, conversation_id, message, now_ms=now_ms, author=author, payload=payload
            )
        )
        await self.publish(conversation_id, message_event(done.message))
        return done

    async def move(
        self,
        conversation_id: str,
        what: Move,
        *,
        now_ms: int,
        expect: Iterable[State] | None = None,
        seen_before: int | None = None,
        **changes: Any,
    ) -> Conversation:
        """Move the state (``core.conversations.move``), then tell every follower."""
        conv = await self.tx(
            lambda conn: store.transition(
                conn,
                conversation_id,
                what,
                now_ms=now_ms,
                expect=expect,
                seen_before=seen_before,
                **changes,
            )
        )
        await self.publish(conversation_id, state_event(conv))
        return conv

    async def typing(self, conversation_id: str, sender: Sender, *, now_ms: int) -> None:
        """Typing is not stored: losing one indicator harms nobody."""
        await self.publish(conversation_id, {"type": "typing", "sender": sender, "at": now_ms})

    async def read(self, conversation_id: str, *, reader: str, seq: int) -> None:
        await self.tx(lambda conn: store.read(conn, conversation_id, reader=reader, seq=seq))
        await self.publish(conversation_id, {"type": "read", "reader": reader, "seq": seq})

    async def seen(self, conversation_id: str, *, now_ms: int) -> None:
        await self.tx(lambda conn: store.seen(conn, conversation_id, now_ms=now_ms))

    async def history(self, conversation_id: str, after_seq: int = 0) -> list[Message]:
        return await self.tx(lambda conn: store.after(conn, conversation_id, after_seq))

    async def follow(
        self, conversation_id: str, after_seq: int = 0, *, with_state: bool = False
    ) -> AsyncIterator[Event]:
        """Every message after ``after_seq`` (from the store), then live events, each message
        exactly once and in sequence order; typing, read and state events as they come.
        ``with_state``: first the conversation's state as it is once subscribed, so no move
        falls between what the caller knew and what it hears."""
        sub = await self.bus.subscribe(channel(conversation_id))
        last = after_seq
        try:
            if with_state:
                yield state_event(await self.get(conversation_id))
            for m in await self.history(conversation_id, last):
                last = m.seq
                yield message_event(m)
            while True:
                data = await sub.get()
                if data == GAP:
                    missed = await self.history(conversation_id, last)
                    for m in missed:
                        last = m.seq
                        yield message_event(m)
                    continue
                event = json.loads(data)
                if event.get("type") == "message":
                    seq = int(event["message"]["seq"])
                    if seq <= last:
                        continue
                    if seq > last + 1:  # published before we listened: read the gap
                        for m in await self.history(conversation_id, last):
                            last = m.seq
                            yield message_event(m)
                        continue
                    last = seq
                yield event
        finally:
            await sub.aclose()

    async def sweep(self, *, now_ms: int) -> list[Conversation]:
        """Conversations whose visitor was silent past the grace, moved with ``leave``
        (abandoned, or to wrap-up when an agent was in it). A conversation another process
        moved meanwhile is skipped, not moved twice."""
        gone = await self.tx(
            lambda conn: store.gone_visitors(conn, now_ms=now_ms, grace_ms=self.grace_ms)
        )
        moved = []
        for conv in gone:
            try:
                moved.append(
                    await self.move(
                        conv.id,
                        "leave",
                        now_ms=now_ms,
                        expect=[conv.state],
                        seen_before=now_ms - self.grace_ms,
                    )
                )
            except ConversationError:
                continue
        return moved
