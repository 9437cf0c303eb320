"""Conversations in the server: stored, then fanned out; followers that resume from a sequence
get every message once and in order — across two processes on Redis, after a restart, and
when they fall behind."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import Engine

from opportune.core.conversations import draft
from opportune.engine.bus import QUEUE_MAX, Bus, MemoryBus, RedisBus
from opportune.engine.conversations import ConversationHub

REDIS_URL = "redis://127.0.0.1:6379/15"


def _hubs(kind: str, engine: Engine) -> tuple[ConversationHub, ConversationHub]:
    """Two hubs on one database: one process twice (memory) or two processes (Redis)."""
    if kind == "memory":
        bus: Bus = MemoryBus()
        return ConversationHub(engine, bus), ConversationHub(engine, bus)
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    return (
        ConversationHub(engine, RedisBus(REDIS_URL, prefix=prefix), grace_ms=30_000),
        ConversationHub(engine, RedisBus(REDIS_URL, prefix=prefix), grace_ms=30_000),
    )


Body = Callable[[ConversationHub, ConversationHub], Awaitable[None]]


@pytest.fixture(params=[pytest.param("memory"), pytest.param("redis", marks=pytest.mark.redis)])
def hubs(request: pytest.FixtureRequest, engine: Engine) -> Callable[[Body], None]:
    def run(body: Body) -> None:
        async def go() -> None:
            a, b = _hubs(request.param, engine)
            try:
                await body(a, b)
            finally:
                await a.bus.aclose()
                if b.bus is not a.bus:
                    await b.bus.aclose()

        asyncio.run(go())

    return run


async def _open(hub: ConversationHub, cid: str = "c1", state: str = "bot") -> None:
    await hub.open(
        conversation_id=cid,
        site_id="s",
        visitor_id="v1",
        customer_id=None,
        state=state,
        now_ms=1000,
        queue="sales",
    )


async def _take(it: Any, n: int, kinds: tuple[str, ...] = ("message",)) -> list[dict]:
    out: list[dict] = []
    while len(out) < n:
        event = await asyncio.wait_for(it.__anext__(), 5.0)
        if event["type"] in kinds:
            out.append(event)
    return out


def _texts(events: list[dict]) -> list[str]:
    return [e["message"]["text"] for e in events]


def test_a_message_posted_on_one_process_reaches_a_follower_on_the_other(hubs) -> None:  # type: ignore[no-untyped-def]
    async def go(a: ConversationHub, b: ConversationHub) -> None:
        await _open(a)
        follower = b.follow("c1")
        first = asyncio.ensure_future(_take(follower, 2))
        await asyncio.sleep(0.3)  # the follower is listening
        await a.post("c1", draft("m1", "visitor", "hello"), now_ms=2000)
        again = await a.post("c1", draft("m1", "visitor", "hello"), now_ms=2001)  # a resend
        await a.post("c1", draft("m2", "bot", "hi! what can I do?"), now_ms=2002, author="bot")
        got = await first
        assert again.duplicate
        assert _texts(got) == ["hello", "hi! what can I do?"]
        assert [e["message"]["seq"] for e in got] == [1, 2]
        await follower.aclose()

    hubs(go)


def test_a_follower_resuming_after_a_sequence_gets_only_what_it_missed(hubs) -> None:  # type: ignore[no-untyped-def]
    async def go(a: ConversationHub, b: ConversationHub) -> None:
        await _open(a)
        for i in range(5):
            await a.post("c1", draft(f"m{i}", "visitor", f"line {i}"), now_ms=2000 + i)
        # A page reload on the other process that had seen up to seq 3.
        follower = b.follow("c1", after_seq=3)
        got = await _take(follower, 2)
        assert _texts(got) == ["line 3", "line 4"]
        live = asyncio.ensure_future(_take(follower, 1))
        await asyncio.sleep(0.2)
        await a.post("c1", draft("m5", "agent", "an agent here"), now_ms=3000, author="ana")
        assert _texts(await live) == ["an agent here"]
        await follower.aclose()

    hubs(go)


def test_a_restarted_process_loses_no_message(engine: Engine) -> None:
    async def go() -> None:
        before = ConversationHub(engine, MemoryBus())
        await _open(before)
        await before.post("c1", draft("m1", "visitor", "before the restart"), now_ms=2000)
        await before.bus.aclose()
        after = ConversationHub(engine, MemoryBus())  # a new process: nothing in memory
        follower = after.follow("c1")
        assert _texts(await _take(follower, 1)) == ["before the restart"]
        await follower.aclose()

    asyncio.run(go())


def test_a_follower_that_falls_behind_still_gets_every_message_once_in_order(hubs) -> None:  # type: ignore[no-untyped-def]
    async def go(a: ConversationHub, b: ConversationHub) -> None:
        await _open(a, state="queued")
        follower = b.follow("c1")
        started = asyncio.ensure_future(_take(follower, 1))
        await asyncio.sleep(0.2)
        await a.post("c1", draft("first", "visitor", "0"), now_ms=2000)
        await started
        n = QUEUE_MAX + 40  # more than the bus holds for one subscriber
        for i in range(1, n):
            await a.post("c1", draft(f"m{i}", "visitor", str(i)), now_ms=2000 + i)
        await asyncio.sleep(0.5)  # all published before the follower reads again
        rest = await _take(follower, n - 1)
        assert _texts(rest) == [str(i) for i in range(1, n)]
        await follower.aclose()

    hubs(go)


def test_typing_read_and_state_changes_are_announced(hubs) -> None:  # type: ignore[no-untyped-def]
    async def go(a: ConversationHub, b: ConversationHub) -> None:
        await _open(a)
        follower = b.follow("c1")
        events = asyncio.ensure_future(_take(follower, 4, ("typing", "read", "state", "message")))
        await asyncio.sleep(0.3)
        await a.typing("c1", "visitor", now_ms=1500)
        await a.post("c1", draft("m1", "visitor", "hi"), now_ms=2000)
        await a.read("c1", reader="agent", seq=1)
        await a.move("c1", "escalate", now_ms=2100)
        got = await events
        assert [e["type"] for e in got] == ["typing", "message", "read", "state"]
        assert got[3]["state"] == "queued" and got[2] == {
            "type": "read",
            "reader": "agent",
            "seq": 1,
        }
        await follower.aclose()

    hubs(go)


def test_the_sweep_lets_go_of_silent_visitors_once_and_spares_those_back(engine: Engine) -> None:
    async def go() -> None:
        hub = ConversationHub(engine, MemoryBus(), grace_ms=30_000)
        await _open(hub, "silent")
        await _open(hub, "back")
        await hub.seen("back", now_ms=40_000)
        moved = await hub.sweep(now_ms=50_000)
        assert [(c.id, c.state) for c in moved] == [("silent", "abandoned")]
        assert await hub.sweep(now_ms=50_000) == []
        assert (await hub.get("back")).state == "bot"

    asyncio.run(go())
