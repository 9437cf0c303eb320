"""Live per-visitor state: in process memory (the embedded default) or in Redis (several
processes).

Only what ingestion needs to decide without reading the database: the visitor's customer,
its session track, the ids of its recent events, and the current visit's journey state
with the visitor's customer-scope segment assignments (what the rules read and keep).
The ids are a short cut, not the authority: they hold only ids known committed (added
after the commit), and the database's ``event_ids`` key decides what is new (the writer
reports events it finds already stored, and the batch is judged again on a reloaded state).

Both stores offer the same ``hold(visitor_id, now_ms)``: an async context manager around
one batch's work on one visitor. What happens inside is the same code for both; they
differ in how concurrent batches for one visitor are kept from losing each other's
updates:

- memory: one process, one event loop — batches of one visitor take turns (an
  ``asyncio.Lock`` per visitor held until the batch's commit), so a batch never builds on
  another's changes that may still fail to commit; other visitors' batches run meanwhile
  and share group commits.
- Redis: per-visitor serialisation — a lock (``SET NX PX`` with a token, released by a
  compare-and-delete script) held from reading the state until it is saved after the
  database commit. Concurrent batches for one visitor are rare (the snippet sends one
  batch at a time), so waiting is cheaper than optimistic retries of whole batches.

The lock is for speed, not for safety: it can expire (a slow commit, a paused or killed
process) and let a second writer in. Safety is the database's: the state carries the
visitor's ``version`` it was read at, and the write commits only if the stored version
still equals it (``store/writer.py``); a superseded batch is judged again on a state
reloaded from the database. The state is saved back to Redis only while the lock is
still this batch's, so a writer whose lock expired cannot overwrite a newer state.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from opportune.core.actionmaps import Engagement
from opportune.core.client_clock import ClientClock
from opportune.core.journey import Journey
from opportune.core.session import SessionTrack
from opportune.settings import DEFAULT_REDIS_PREFIX


@dataclass(slots=True)
class VisitorLive:
    site_id: str
    customer_id: str | None
    first_seen_at: int
    track: SessionTrack
    # event id -> ts, only within the acceptance window (pruned as time passes)
    recent_ids: dict[str, int] = field(default_factory=dict)
    # The current visit as the rules see it (None before the first event of a visit).
    journey: Journey | None = None
    # Customer-scope segments in force: name -> [since, expires at].
    assignments: dict[str, list[int]] = field(default_factory=dict)
    # Outcomes achieved by this visitor's visits before the current one: name -> count.
    past_outcomes: dict[str, int] = field(default_factory=dict)
    # Offers made and answered, caps, maps waiting for a later page or visit.
    engagement: Engagement = field(default_factory=Engagement)
    # The visitor's row version in the database this state includes (``visitors.version``):
    # a batch's write commits only from it, and bumps it.
    version: int = 0
    # The browser's skew and the recorded order of its events (core/client_clock.py).
    clock: ClientClock = field(default_factory=ClientClock)

    def prune(self, horizon_ms: int) -> None:
        """Forget event ids older than ``horizon_ms`` (once there are enough to bother).

        >>> state = VisitorLive("site", None, 0, SessionTrack(), {f"e{i}": i for i in range(100)})
        >>> state.prune(90)
        >>> sorted(state.recent_ids)[:2]
        ['e90', 'e91']
        """
        if len(self.recent_ids) > 64:
            self.recent_ids = {k: t for k, t in self.recent_ids.items() if t >= horizon_ms}


Loader = Callable[[str, int], Awaitable[VisitorLive | None]]


class Slot:
    """One batch's hold on a visitor's state. ``create`` a new visitor's state."""

    __slots__ = ("_adopt", "_settle", "state", "write")

    def __init__(
        self,
        state: VisitorLive | None,
        settle: asyncio.Future[Any] | None,
        adopt: Callable[[VisitorLive], None] | None = None,
    ) -> None:
        self.state = state
        self.write: asyncio.Future[Any] | None = None  # this batch's write, once submitted
        self._settle = settle
        self._adopt = adopt

    def create(self, state: VisitorLive) -> VisitorLive:
        """The state of a visitor never seen before, shared at once with other batches of
        the same visitor already under way (memory store: they would otherwise each start
        one, and their journeys with it)."""
        self.state = state
        if self._adopt is not None:
            self._adopt(state)
        return state

    async def settled(self) -> None:
        """Wait until an earlier batch's write for this visitor is durable (or failed)."""
        if self._settle is not None and not self._settle.done():
            await asyncio.shield(self._settle)


class LiveStore(Protocol):
    def hold(self, visitor_id: str, now_ms: int) -> contextlib.AbstractAsyncContextManager[Slot]:
        """The visitor's state for one batch; on an exception the state is forgotten."""
        ...

    def evict(self, visitor_ids: list[str]) -> None:
        """Forget visitors whose stored truth changed underneath (erase, merge)."""
        ...

    async def peek(self, visitor_id: str, now_ms: int) -> VisitorLive | None:
        """The visitor's state for reading (a view, not a hold: never written back)."""
        ...

    async def aclose(self) -> None: ...


class MemoryLiveStore:
    """An LRU of ``VisitorLive`` with single-flight loading from the database on a miss."""

    def __init__(self, loader: Loader, *, capacity: int = 200_000) -> None:
        self._loader = loader
        self._capacity = capacity
        self._items: OrderedDict[str, VisitorLive] = OrderedDict()
        self._loading: dict[str, asyncio.Future[VisitorLive | None]] = {}
        self._pending: dict[str, int] = {}  # writes in flight: never evict those visitors
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._items)

    @contextlib.asynccontextmanager
    async def hold(self, visitor_id: str, now_ms: int) -> AsyncIterator[Slot]:
        # One batch of a visitor at a time: the next one starts from a state whose writes
        # are committed (or, after a failure, reloaded from the database) — never from
        # changes whose commit may still fail.
        lock, users = self._locks.get(visitor_id) or (asyncio.Lock(), 0)
        self._locks[visitor_id] = (lock, users + 1)
        try:
            async with lock, self._hold(visitor_id, now_ms) as slot:
                yield slot
        finally:
            lock, users = self._locks[visitor_id]
            if users <= 1:
                del self._locks[visitor_id]
            else:
                self._locks[visitor_id] = (lock, users - 1)

    @contextlib.asynccontextmanager
    async def _hold(self, visitor_id: str, now_ms: int) -> AsyncIterator[Slot]:
        state = await self.get(visitor_id, now_ms)
        slot = Slot(state, self._inflight.get(visitor_id), lambda st: self.put(visitor_id, st))
        self._pending[visitor_id] = self._pending.get(visitor_id, 0) + 1
        try:
            yield slot
            if slot.state is not None and state is None:
                self.put(visitor_id, slot.state)
            if slot.write is not None:
                self._inflight[visitor_id] = slot.write
        except BaseException:
            # The database did not take it: forget what we assumed, so a retry of the
            # same batch is judged against the stored truth.
            self.evict([visitor_id])
            raise
        finally:
            left = self._pending[visitor_id] - 1
            if left:
                self._pending[visitor_id] = left
            else:
                del self._pending[visitor_id]
                self._inflight.pop(visitor_id, None)

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

    async def peek(self, visitor_id: str, now_ms: int) -> VisitorLive | None:
        return await self.get(visitor_id, now_ms)

    def put(self, visitor_id: str, item: VisitorLive) -> None:
        self._items[visitor_id] = item
        self._items.move_to_end(visitor_id)
        # Evict least recently used visitors, skipping (and refreshing) any with writes in
        # flight; bounded so a cache full of pending writes cannot spin.
        for _ in range(8):
            if len(self._items) <= self._capacity:
                break
            key = next(iter(self._items))
            if key in self._pending:
                self._items.move_to_end(key)
            else:
                del self._items[key]

    def evict(self, visitor_ids: list[str]) -> None:
        for vid in visitor_ids:
            self._items.pop(vid, None)

    async def aclose(self) -> None:
        self._items.clear()


_STATE = msgspec.msgpack.Encoder()
_DECODE_STATE = msgspec.msgpack.Decoder(VisitorLive)
# Delete the lock only if it is still ours (it may have expired and been taken).
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# Save the state only while the lock (KEYS[1]) is still ours: once it expired, another
# batch may have saved a newer state, which must not be overwritten by an older one.
_SAVE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[3])
end
return 0
"""


def _decode(raw: bytes) -> VisitorLive | None:
    """The stored state, or None if it was written by another version of the code (the
    state is then rebuilt from the database, as after an expiry)."""
    try:
        return _DECODE_STATE.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


# A visitor's Redis lock lives this long unless released: how long a killed process's
# visitors wait. Safety does not depend on it (the database refuses a superseded write),
# so it is short; a commit slower than this only lets the next batch of the visitor start
# and wait for the database's row.
LOCK_MS = 3_000


class LockTimeout(RuntimeError):
    """Another process held a visitor's lock for too long; the batch should be retried."""


class RedisLiveStore:
    """Live state in Redis, shared by every process of the deployment."""

    def __init__(
        self,
        url: str,
        loader: Loader,
        *,
        prefix: str = DEFAULT_REDIS_PREFIX,
        ttl_s: int = 2 * 86_400,
        lock_ms: int = LOCK_MS,
        wait_ms: int = 5_000,
    ) -> None:
        import redis
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url)
        self._sync = redis.Redis.from_url(url)
        self._loader = loader
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._lock_ms = lock_ms
        self._wait_ms = wait_ms
        self._unlock = self._redis.register_script(_UNLOCK)
        self._save = self._redis.register_script(_SAVE)
        # Batches of one visitor in this process queue here rather than polling Redis.
        self._local: dict[str, tuple[asyncio.Lock, int]] = {}

    def _key(self, visitor_id: str) -> str:
        return f"{self._prefix}live:{visitor_id}"

    @contextlib.asynccontextmanager
    async def hold(self, visitor_id: str, now_ms: int) -> AsyncIterator[Slot]:
        lock, users = self._local.get(visitor_id, (asyncio.Lock(), 0))
        self._local[visitor_id] = (lock, users + 1)
        try:
            async with lock:
                token = secrets.token_hex(8)
                lock_key = self._key(visitor_id) + ":lock"
                await self._acquire(lock_key, token)
                try:
                    raw = await self._redis.get(self._key(visitor_id))
                    state = _decode(raw) if raw is not None else None
                    if state is None:
                        state = await self._loader(visitor_id, now_ms)
                    slot = Slot(state, None)
                    try:
                        yield slot
                    except BaseException:
                        await self._redis.delete(self._key(visitor_id))
                        raise
                    if slot.state is not None:
                        await self._save(
                            keys=[lock_key, self._key(visitor_id)],
                            args=[token, _STATE.encode(slot.state), self._ttl_s],
                        )
                finally:
                    await self._unlock(keys=[lock_key], args=[token])
        finally:
            lock, users = self._local[visitor_id]
            if users <= 1:
                del self._local[visitor_id]
            else:
                self._local[visitor_id] = (lock, users - 1)

    async def _acquire(self, key: str, token: str) -> None:
        delay = 0.001
        waited = 0.0
        while not await self._redis.set(key, token, nx=True, px=self._lock_ms):
            if waited * 1000 >= self._wait_ms:
                raise LockTimeout(f"visitor busy for over {self._wait_ms} ms: {key}")
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)

    async def peek(self, visitor_id: str, now_ms: int) -> VisitorLive | None:
        raw = await self._redis.get(self._key(visitor_id))
        state = _decode(raw) if raw is not None else None
        return state if state is not None else await self._loader(visitor_id, now_ms)

    def evict(self, visitor_ids: list[str]) -> None:
        if visitor_ids:
            self._sync.delete(*[self._key(v) for v in visitor_ids])

    async def aclose(self) -> None:
        await self._redis.aclose()
        self._sync.close()
