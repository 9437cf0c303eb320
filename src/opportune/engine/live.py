"""Live per-visitor state kept in process memory (the embedded default).

Only what ingestion needs to decide without reading the database: the visitor's customer,
its session track and the ids of its recent events. Events older than the acceptance
window are refused anyway, so remembering the ids inside that window is enough for exact
de-duplication — and rebuilding that memory from the database after a restart is a small,
bounded read.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from opportune.core.session import SessionTrack


@dataclass(slots=True)
class VisitorLive:
    site_id: str
    customer_id: str | None
    first_seen_at: int
    track: SessionTrack
    # event id -> ts, only within the acceptance window (pruned as time passes)
    recent_ids: dict[str, int] = field(default_factory=dict)
    pending: int = 0  # writes in flight: never evict while > 0
    # The newest write in flight: a retry answered "duplicate" waits for it, so a 2xx for
    # the retry never precedes the durability of the original.
    inflight: asyncio.Future[list[object]] | None = None

    def prune(self, horizon_ms: int) -> None:
        if len(self.recent_ids) > 64:
            self.recent_ids = {k: t for k, t in self.recent_ids.items() if t >= horizon_ms}


Loader = Callable[[str, int], Awaitable[VisitorLive | None]]


class MemoryLiveStore:
    """An LRU of ``VisitorLive`` with single-flight loading from the database on a miss."""

    def __init__(self, loader: Loader, *, capacity: int = 200_000) -> None:
        self._loader = loader
        self._capacity = capacity
        self._items: OrderedDict[str, VisitorLive] = OrderedDict()
        self._loading: dict[str, asyncio.Future[VisitorLive | None]] = {}

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, visitor_id: str, now_ms: int) -> VisitorLive | None:
        """The live state, loading it once however many requests ask at the same time."""
        item = self._items.get(visitor_id)
        if item is not None:
            self._items.move_to_end(visitor_id)
            return item
        waiting = self._loading.get(visitor_id)
        if waiting is not None:
            await asyncio.shield(waiting)
            return self._items.get(visitor_id)
        fut: asyncio.Future[VisitorLive | None] = asyncio.get_running_loop().create_future()
        self._loading[visitor_id] = fut
        try:
            loaded = await self._loader(visitor_id, now_ms)
            if loaded is not None:
                self.put(visitor_id, loaded)
            fut.set_result(loaded)
            return loaded
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters get it through shield
            raise
        finally:
            del self._loading[visitor_id]

    def put(self, visitor_id: str, item: VisitorLive) -> None:
        self._items[visitor_id] = item
        self._items.move_to_end(visitor_id)
        # Evict least recently used visitors, skipping (and refreshing) any with writes in
        # flight; bounded so a cache full of pending writes cannot spin.
        for _ in range(8):
            if len(self._items) <= self._capacity:
                break
            key, oldest = next(iter(self._items.items()))
            if oldest.pending:
                self._items.move_to_end(key)
            else:
                del self._items[key]

    def evict(self, visitor_ids: list[str]) -> None:
        """Forget visitors whose stored truth changed underneath (erase, merge, failed write)."""
        for vid in visitor_ids:
            self._items.pop(vid, None)
