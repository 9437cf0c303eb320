"""The bus's contract, which every implementation passes: memory in one process, Redis pub/sub
across processes (two buses on one Redis stand for two server processes)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from opportune.engine.bus import GAP, QUEUE_MAX, Bus, MemoryBus, RedisBus

REDIS_URL = "redis://127.0.0.1:6379/15"


def _redis_pair() -> tuple[Bus, Bus]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    return RedisBus(REDIS_URL, prefix=prefix), RedisBus(REDIS_URL, prefix=prefix)


def _memory_pair() -> tuple[Bus, Bus]:
    bus = MemoryBus()
    return bus, bus


Body = Callable[[Bus, Bus], Awaitable[None]]
PAIRS: dict[str, Callable[[], tuple[Bus, Bus]]] = {
    "memory": _memory_pair,
    "redis": _redis_pair,
}


@pytest.fixture(params=[pytest.param("memory"), pytest.param("redis", marks=pytest.mark.redis)])
def buses(request: pytest.FixtureRequest) -> Callable[[Body], None]:
    """Runs a test body on a fresh event loop with two buses made inside it."""

    def run(body: Body) -> None:
        async def go() -> None:
            a, b = PAIRS[request.param]()
            try:
                await body(a, b)
            finally:
                await a.aclose()
                if b is not a:
                    await b.aclose()

        asyncio.run(go())

    return run


async def _next(sub, timeout: float = 5.0) -> bytes:  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(sub.get(), timeout)


def test_an_event_reaches_every_subscriber_of_its_channel_and_no_other(buses) -> None:  # type: ignore[no-untyped-def]
    async def go(a: Bus, b: Bus) -> None:
        here = await a.subscribe("chat:1")
        there = await b.subscribe("chat:1")
        other = await b.subscribe("chat:2")
        await a.publish("chat:1", b"hello")
        assert await _next(here) == b"hello"
        assert await _next(there) == b"hello"
        with pytest.raises(TimeoutError):
            await _next(other, 0.3)
        for s in (here, there, other):
            await s.aclose()

    buses(go)


def test_events_of_one_channel_arrive_in_the_order_published(buses) -> None:  # type: ignore[no-untyped-def]
    async def go(a: Bus, b: Bus) -> None:
        sub = await b.subscribe("chat:o")
        for i in range(100):
            await a.publish("chat:o", str(i).encode())
        got = [await _next(sub) for _ in range(100)]
        assert got == [str(i).encode() for i in range(100)]
        await sub.aclose()

    buses(go)


def test_one_subscription_may_hear_several_channels(buses) -> None:  # type: ignore[no-untyped-def]
    async def go(a: Bus, b: Bus) -> None:
        sub = await b.subscribe("agent:ana", "chat:7")
        await a.publish("agent:ana", b"offer")
        await a.publish("chat:7", b"message")
        assert {await _next(sub), await _next(sub)} == {b"offer", b"message"}
        await sub.aclose()

    buses(go)


def test_a_closed_subscription_hears_nothing_more_and_others_still_do(buses) -> None:  # type: ignore[no-untyped-def]
    async def go(a: Bus, b: Bus) -> None:
        gone = await b.subscribe("chat:c")
        stays = await b.subscribe("chat:c")
        await gone.aclose()
        await a.publish("chat:c", b"after")
        assert await _next(stays) == b"after"
        await stays.aclose()
        # With no subscriber left the channel is dropped; a new one hears new events only.
        again = await b.subscribe("chat:c")
        await a.publish("chat:c", b"new")
        assert await _next(again) == b"new"
        await again.aclose()

    buses(go)


def test_a_subscriber_that_falls_behind_is_told_of_the_gap_not_left_unbounded(buses) -> None:  # type: ignore[no-untyped-def]
    async def go(a: Bus, b: Bus) -> None:
        slow = await b.subscribe("chat:s")
        for i in range(QUEUE_MAX + 10):
            await a.publish("chat:s", str(i).encode())
        # Let every event reach this process before reading.
        probe = await b.subscribe("chat:probe")
        await a.publish("chat:probe", b"x")
        await _next(probe)
        first = await _next(slow)
        # Either it overflowed (a GAP, then what came after it) or, on a fast reader,
        # everything is there in order: it never silently loses an event.
        if first == GAP:
            rest = []
            with pytest.raises(TimeoutError):
                while True:
                    rest.append(await _next(slow, 0.3))
            assert len(rest) < QUEUE_MAX
        else:
            got = [first] + [await _next(slow) for _ in range(QUEUE_MAX + 9)]
            assert got == [str(i).encode() for i in range(QUEUE_MAX + 10)]
        await slow.aclose()
        await probe.aclose()

    buses(go)
