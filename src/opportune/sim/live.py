"""Simulated visitors sent live over HTTP to a running server (``opportune simulate web``)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import msgspec

from opportune.core.events import Batch
from opportune.sim.personas import TrafficMix
from opportune.sim.web import (
    DEFAULT_ORIGIN,
    SimBatch,
    SimSession,
    WebSimulator,
    to_batches,
)


def shift(batch: Batch, delta_ms: int) -> Batch:
    """The same batch ``delta_ms`` later (ts and sentAt): to replay history as live traffic."""
    return msgspec.structs.replace(
        batch,
        sent_at=batch.sent_at + delta_ms,
        events=[msgspec.structs.replace(e, ts=e.ts + delta_ms) for e in batch.events],
    )


@dataclass(slots=True)
class LiveStats:
    """What a live run sent, and how the server answered (status code -> batches)."""

    sessions: int = 0
    batches: int = 0
    events: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0


_ENCODE = msgspec.json.Encoder()


async def send_live(
    base_url: str,
    site_key: str = "demo-site-key",
    *,
    seed: int,
    rate: float = 2.0,
    duration_s: float = 60.0,
    time_scale: float = 1.0,
    history: WebSimulator | None = None,
    mix: TrafficMix | None = None,
    origin: str = DEFAULT_ORIGIN,
    concurrency: int = 64,
    clock: Callable[[], float] = time.time,
    client: httpx.AsyncClient | None = None,
) -> LiveStats:
    """Post simulated visitors to a running server in real time for ``duration_s`` seconds.

    New sessions arrive at ``rate`` per second (Poisson); each plays at ``time_scale`` times
    real speed (1.0 keeps dwell times as trained on; 10 makes a demo lively). Timestamps are
    rewritten to the moment of sending, so the server's one-hour age limit never bites.
    ``history``: the simulator that generated the backfill, so its visitors come back live.
    ``clock`` is the only clock read (seconds, like ``time.time``). Batches of one visitor are
    posted one after the other, in order; different visitors' batches go concurrently.
    Run it with ``asyncio.run(send_live(...))``.
    """
    sim = history or WebSimulator(seed, mix=mix, site_key=site_key, origin=origin)
    sim.site_key = site_key
    stats = LiveStats()
    t0 = int(clock() * 1000)
    horizon = t0 + int(duration_s * 1000 * time_scale)
    own = client is None
    http = client or httpx.AsyncClient(base_url=base_url, timeout=10.0)
    sender = _Sender(http, stats, clock, concurrency)
    try:
        for sb in to_batches(_arrivals(sim, stats, t0, horizon, rate, time_scale)):
            due = t0 + (sb.received_ms - t0) / time_scale
            wait = due / 1000 - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            sender.send(sb)
        await sender.drain()
    finally:
        if own:
            await http.aclose()
    return stats


def _arrivals(
    sim: WebSimulator, stats: LiveStats, t0: int, horizon: int, rate: float, time_scale: float
) -> Iterator[SimSession]:
    """Sessions starting from ``t0`` as a Poisson process of ``rate`` a (scaled) second."""
    d = sim.draws
    t = t0
    while True:
        t += int(-math.log(1.0 - d.u()) * 1000 * time_scale / rate)
        if t > horizon:
            return
        stats.sessions += 1
        yield sim.session(t)


class _Sender:
    """Posts batches concurrently, one visitor's batches one after the other, in order."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        stats: LiveStats,
        clock: Callable[[], float],
        concurrency: int,
    ) -> None:
        self.http = http
        self.stats = stats
        self.clock = clock
        self.gate = asyncio.Semaphore(concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self.last: dict[str, asyncio.Task[None]] = {}  # per visitor: its batch in flight
        self.owner: dict[asyncio.Task[None], str] = {}

    def send(self, sb: SimBatch) -> None:
        """Post ``sb`` once the visitor's batch before it, if any, has been answered."""
        self.stats.batches += 1
        self.stats.events += len(sb.batch.events)
        vid = sb.batch.visitor_id
        before = self.last.get(vid)
        task = asyncio.create_task(self._post(sb, before if before and not before.done() else None))
        self.last[vid] = task
        self.owner[task] = vid
        self.tasks.add(task)
        task.add_done_callback(self._forget)

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        vid = self.owner.pop(task)
        if self.last.get(vid) is task:
            del self.last[vid]

    async def _post(self, sb: SimBatch, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])
        async with self.gate:
            now = int(self.clock() * 1000)
            b = shift(sb.batch, now - sb.received_ms)
            try:
                r = await self.http.post(
                    "/v1/events",
                    content=_ENCODE.encode(b),
                    headers={
                        "User-Agent": sb.user_agent,
                        "Content-Type": "text/plain;charset=UTF-8",
                    },
                )
                statuses = self.stats.statuses
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            except httpx.HTTPError:
                self.stats.errors += 1
