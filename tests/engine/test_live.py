"""The in-memory live store: one load per visitor however many ask, bounded, never evicting
a visitor with a write in flight."""

from __future__ import annotations

import asyncio

import pytest

from opportune.core.session import SessionTrack
from opportune.engine.live import MemoryLiveStore, VisitorLive


def item(site: str = "s") -> VisitorLive:
    return VisitorLive(site_id=site, customer_id=None, first_seen_at=0, track=SessionTrack())


def test_concurrent_misses_share_one_load() -> None:
    calls: list[str] = []

    async def loader(vid: str, now: int) -> VisitorLive | None:
        calls.append(vid)
        await asyncio.sleep(0.01)
        return item()

    async def main() -> list[VisitorLive | None]:
        store = MemoryLiveStore(loader)
        return await asyncio.gather(*[store.get("v1", 0) for _ in range(20)])

    got = asyncio.run(main())
    assert calls == ["v1"]
    assert all(g is got[0] for g in got)


def test_a_failed_load_fails_every_waiter_and_is_retried() -> None:
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

    asyncio.run(main())
    assert attempts == 2


def test_lru_is_bounded_but_keeps_visitors_with_pending_writes() -> None:
    async def loader(vid: str, now: int) -> VisitorLive | None:
        return None

    store = MemoryLiveStore(loader, capacity=3)
    busy = item()
    busy.pending = 1
    store.put("busy", busy)
    for i in range(5):
        store.put(f"v{i}", item())
    assert len(store) == 3
    assert asyncio.run(store.get("busy", 0)) is busy
    store.evict(["busy", "nope"])
    assert asyncio.run(store.get("busy", 0)) is None


@pytest.mark.parametrize("n", [0, 10, 100])
def test_recent_ids_are_pruned_to_the_window(n: int) -> None:
    v = item()
    v.recent_ids = {f"old{i}": 1 for i in range(n)} | {f"new{i}": 1000 for i in range(70)}
    v.prune(500)
    assert set(v.recent_ids) == {f"new{i}" for i in range(70)}
