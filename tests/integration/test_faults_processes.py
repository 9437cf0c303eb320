"""Faults of a deployment of two ``opportune serve`` processes sharing a PostgreSQL and a
Redis of the test's own: ``kill -9`` of one process, Redis restarted (every lock and live
state lost), PostgreSQL restarted — under load, the visitors resending every batch not
acknowledged to either process. Every acknowledged event is stored exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def cluster(own_postgres, own_redis, serve) -> Iterator[tuple[list, object, object]]:
    """Two processes on one PostgreSQL and one Redis: (servers, postgres, redis)."""
    servers = [
        serve(name, database_url=own_postgres.url, redis_url=own_redis.url, ready=False)
        for name in ("a", "b")
    ]
    for server in servers:
        server.ready()
    yield servers, own_postgres, own_redis


def _under_load(
    load,
    fault: Callable[[], None],
    *,
    after: int,
    down_s: float = 0.0,
    restore: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Run ``load``; once ``after`` batches are acknowledged, ``fault()``, then after
    ``down_s`` ``restore()``. The monotonic times of the fault and of the return."""
    times: list[float] = []

    async def inject() -> None:
        times.append(await load.when_acked(after))
        await asyncio.to_thread(fault)
        if restore is not None:
            await asyncio.sleep(down_s)
            await asyncio.to_thread(restore)
        times.append(time.monotonic())

    async def main() -> None:
        await asyncio.gather(load.run(), inject())

    asyncio.run(main())
    return times[0], times[1]


def test_kill_9_of_one_of_two_processes_with_resends_to_either(
    cluster, visitors, stored_once
) -> None:
    """Process a dies with commits in flight, answers unsent and visitor locks held in
    Redis; the visitors resend to b (and to a, refused: it is dead). b waits out a's locks
    (their lifetime); the database's keys and visitor versions keep each event once."""
    (a, b), pg, _redis = cluster
    load = visitors([a.url, b.url], visitors=16, batches=10)
    at, _ = _under_load(load, a.kill, after=40)
    stored_once(
        pg.url,
        load,
        fault="kill -9 of one of two processes, PostgreSQL + Redis",
        since=at,  # the figures count from the kill (the other process is up)
    )


def test_redis_restarted_under_load(cluster, visitors, stored_once) -> None:
    """Redis down 3 s and back empty: every lock and live state is gone; batches are
    answered 503 meanwhile and judged on the database's state once it is back."""
    (a, b), pg, redis = cluster
    load = visitors([a.url, b.url], visitors=16, batches=10)
    at, back = _under_load(load, redis.stop, after=40, down_s=3.0, restore=redis.start)
    stored_once(
        pg.url, load, fault="Redis restarted (3 s down, keys lost)", since=back, fault_at=at
    )


def test_postgres_restarted_under_load(cluster, visitors, stored_once) -> None:
    """PostgreSQL stopped (sessions cut mid-transaction: commits whose outcome the server
    never learns), 3 s down, started again; the visitors resend what was not answered."""
    (a, b), pg, _redis = cluster
    load = visitors([a.url, b.url], visitors=16, batches=10)
    at, back = _under_load(load, pg.stop, after=40, down_s=3.0, restore=pg.start)
    stored_once(pg.url, load, fault="PostgreSQL restarted (3 s down)", since=back, fault_at=at)
