"""The live-state contract, run against every store (memory, Redis), plus what is particular
to each: one load per visitor however many ask, a bounded LRU, cross-process locking."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from opportune.core.journey import Journey
from opportune.core.scores import Scores
from opportune.core.session import SessionTrack
from opportune.engine.live import (
    _STATE,
    LiveStore,
    Loader,
    MemoryLiveStore,
    RedisLiveStore,
    VisitorLive,
    _decode,
)

REDIS_URL = "redis://127.0.0.1:6379/15"


def item(site: str = "s", number: int = 0) -> VisitorLive:
    return VisitorLive(
        site_id=site, customer_id=None, first_seen_at=0, track=SessionTrack(number=number)
    )


def counting_loader(stored: dict[str, VisitorLive], calls: list[str]) -> Loader:
    async def load(vid: str, now: int) -> VisitorLive | None:
        calls.append(vid)
        await asyncio.sleep(0.005)
        return copy.deepcopy(stored.get(vid))  # a database hands out fresh rows

    return load


def redis_store(loader: Loader) -> RedisLiveStore:
    return RedisLiveStore(REDIS_URL, loader, prefix=f"test-{uuid.uuid4().hex[:8]}:")


STORES: dict[str, Callable[[Loader], Any]] = {"memory": MemoryLiveStore, "redis": redis_store}


@pytest.fixture(params=list(STORES))
def make_store(request: pytest.FixtureRequest) -> Callable[[Loader], LiveStore]:
    return STORES[request.param]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_contract_state_created_in_a_hold_persists(make_store: Any) -> None:
    async def main() -> None:
        store = make_store(counting_loader({}, []))
        async with store.hold("v1", 0) as slot:
            assert slot.state is None
            slot.state = item(number=3)
        async with store.hold("v1", 0) as slot:
            assert slot.state is not None and slot.state.track.number == 3
        await store.aclose()

    run(main())


def test_contract_a_failed_hold_forgets_the_state(make_store: Any) -> None:
    async def main() -> None:
        calls: list[str] = []
        store = make_store(counting_loader({"v1": item(number=1)}, calls))
        async with store.hold("v1", 0) as slot:
            slot.state.track.number = 2
        with pytest.raises(ConnectionError):
            async with store.hold("v1", 0) as slot:
                slot.state.track.number = 99
                raise ConnectionError("database down")
        async with store.hold("v1", 0) as slot:
            # Reloaded from the stored truth, not the failed batch's view.
            assert slot.state.track.number == 1
        assert calls == ["v1", "v1"]
        await store.aclose()

    run(main())


def test_contract_evict_forces_a_reload(make_store: Any) -> None:
    async def main() -> None:
        calls: list[str] = []
        store = make_store(counting_loader({"v1": item()}, calls))
        async with store.hold("v1", 0):
            pass
        store.evict(["v1", "unknown"])
        async with store.hold("v1", 0):
            pass
        assert calls == ["v1", "v1"]
        await store.aclose()

    run(main())


def test_contract_concurrent_batches_of_one_visitor_lose_no_update(make_store: Any) -> None:
    async def main() -> None:
        store = make_store(counting_loader({"v1": item()}, []))

        async def batch() -> None:
            async with store.hold("v1", 0) as slot:
                n = slot.state.track.number
                if isinstance(store, RedisLiveStore):
                    await asyncio.sleep(0.001)  # a commit: other batches must wait
                slot.state.track.number = n + 1

        await asyncio.gather(*[batch() for _ in range(25)])
        async with store.hold("v1", 0) as slot:
            assert slot.state.track.number == 25
        await store.aclose()

    run(main())


def test_redis_processes_share_state_and_serialise_one_visitor() -> None:
    """Two stores on one Redis stand for two server processes."""

    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}:"
        loader = counting_loader({"v1": item()}, [])
        a = RedisLiveStore(REDIS_URL, loader, prefix=prefix)
        b = RedisLiveStore(REDIS_URL, loader, prefix=prefix)

        async def batch(store: RedisLiveStore) -> None:
            async with store.hold("v1", 0) as slot:
                n = slot.state.track.number
                await asyncio.sleep(0.002)
                slot.state.track.number = n + 1

        await asyncio.gather(*[batch(a if i % 2 else b) for i in range(20)])
        async with a.hold("v1", 0) as slot:
            assert slot.state.track.number == 20
        await a.aclose()
        await b.aclose()

    run(main())


def test_redis_a_holder_whose_lock_expired_does_not_overwrite_a_newer_state() -> None:
    """a's lock expires while it works (a slow commit); b gets the lock and saves a newer
    state. a's save afterwards is dropped: the state stays b's. (The database refuses a's
    write anyway if b committed first; this keeps Redis from holding the older state.)"""

    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}:"
        loader = counting_loader({"v1": item()}, [])
        a = RedisLiveStore(REDIS_URL, loader, prefix=prefix, lock_ms=50)
        b = RedisLiveStore(REDIS_URL, loader, prefix=prefix)
        async with a.hold("v1", 0) as slow:
            await asyncio.sleep(0.1)  # past a's lock
            async with b.hold("v1", 0) as slot:
                slot.state.track.number = 2
            slow.state.track.number = 1
        async with b.hold("v1", 0) as slot:
            assert slot.state.track.number == 2
        await a.aclose()
        await b.aclose()

    run(main())


def test_memory_concurrent_misses_share_one_load() -> None:
    calls: list[str] = []

    async def main() -> list[VisitorLive | None]:
        store = MemoryLiveStore(counting_loader({"v1": item()}, calls))
        return await asyncio.gather(*[store.get("v1", 0) for _ in range(20)])

    got = run(main())
    assert calls == ["v1"]
    assert all(g is got[0] for g in got)


def test_memory_a_failed_load_fails_every_waiter_and_is_retried() -> None:
    attempts = 0

    async def loader(vid: str, now: int) -> VisitorLive | None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise ConnectionError("database down")
        return item()

    async def main() -> None:
        store = MemoryLiveStore(loader)
        results = await asyncio.gather(
            *[store.get("v1", 0) for _ in range(3)], return_exceptions=True
        )
        assert all(isinstance(r, ConnectionError) for r in results)
        assert await store.get("v1", 0) is not None

    run(main())
    assert attempts == 2


def test_memory_lru_is_bounded_but_keeps_visitors_with_writes_in_flight() -> None:
    async def main() -> None:
        store = MemoryLiveStore(counting_loader({}, []), capacity=3)
        gate, held = asyncio.Event(), asyncio.Event()

        async def slow_batch() -> None:
            async with store.hold("busy", 0) as slot:
                slot.state = item()
                held.set()
                await gate.wait()  # its write is in flight

        task = asyncio.create_task(slow_batch())
        await held.wait()
        store.put("busy", item())
        for i in range(5):
            store.put(f"v{i}", item())
        assert len(store) == 3
        assert await store.get("busy", 0) is not None
        gate.set()
        await task

    run(main())


@pytest.mark.parametrize("n", [0, 10, 100])
def test_recent_ids_are_pruned_to_the_window(n: int) -> None:
    v = item()
    v.recent_ids = {f"old{i}": 1 for i in range(n)} | {f"new{i}": 1000 for i in range(70)}
    v.prune(500)
    assert set(v.recent_ids) == {f"new{i}" for i in range(70)}


@pytest.fixture(autouse=True, scope="module")
def _clean_redis() -> AsyncIterator[None]:  # type: ignore[misc]
    yield
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter("test-*"):
        r.delete(key)
    r.close()


def test_a_new_visitors_concurrent_batches_share_one_state() -> None:
    """Two batches of a visitor never seen before, under way at once: the second sees the
    state the first created, instead of starting a visit of its own."""
    import asyncio

    from opportune.core.session import SessionTrack
    from opportune.engine.live import MemoryLiveStore, VisitorLive

    async def never_seen(_vid: str, _now: int) -> None:
        await asyncio.sleep(0)
        return None

    store = MemoryLiveStore(never_seen)
    seen: list[object] = []

    async def batch(pause: float) -> None:
        async with store.hold("v", 0) as slot:
            if slot.state is None:
                slot.create(VisitorLive("s", None, 0, SessionTrack()))
            seen.append(slot.state)
            await asyncio.sleep(pause)  # the write in flight

    async def both() -> None:
        await asyncio.gather(batch(0.01), batch(0.0))

    asyncio.run(both())
    assert len(seen) == 2 and seen[0] is seen[1]


def test_scores_keep_their_msgpack_form_of_four_numbers() -> None:
    # States saved in Redis before scores became a record hold [p, max p, q, max q]: they
    # must still decode, and new ones must be read by processes not yet upgraded.
    state = VisitorLive(
        site_id="s",
        customer_id=None,
        first_seen_at=0,
        track=SessionTrack(),
        journey=Journey(session_id="j", started_at=0, scores={"loan": Scores(0.2, 0.4, 0.5, 0.9)}),
    )
    raw = _STATE.encode(state)
    plain = msgspec.msgpack.decode(raw)
    assert [0.2, 0.4, 0.5, 0.9] in _find_lists(plain)
    decoded = _decode(raw)
    assert decoded is not None and decoded.journey is not None
    assert decoded.journey.scores == {"loan": Scores(0.2, 0.4, 0.5, 0.9)}


def _find_lists(value: Any) -> list[list[Any]]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _find_lists(v)]
    if isinstance(value, list):
        return [value, *(x for v in value for x in _find_lists(v))]
    return []
