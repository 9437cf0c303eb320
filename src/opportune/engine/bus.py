"""The bus: what one process publishes on a channel reaches every subscriber of it, in that
process (memory) or in every process of the deployment (Redis pub/sub).

It carries what is already durable (a stored message, a state change) or what may be lost
without harm (typing). Nothing here is the record: a subscriber that falls behind gets a
:data:`GAP` and reads what it missed from the database, so a slow socket never holds
memory without bound and never silently skips a message.

>>> import asyncio
>>> async def demo():
...     bus = MemoryBus()
...     sub = await bus.subscribe("chat:1")
...     await bus.publish("chat:1", b"hello")
...     await bus.publish("chat:2", b"not for us")
...     got = await sub.get()
...     await sub.aclose()
...     return got
>>> asyncio.run(demo())
b'hello'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Final, Protocol

log = logging.getLogger(__name__)

GAP: Final = b""  # "you missed something: read it from the store"
QUEUE_MAX: Final = 256  # events held per subscriber before it is told of a gap


class Subscription(Protocol):
    async def get(self) -> bytes:
        """The next event on the subscribed channels (:data:`GAP` after an overflow)."""
        ...

    async def aclose(self) -> None: ...


class Bus(Protocol):
    async def publish(self, channel: str, data: bytes) -> None: ...

    async def subscribe(self, *channels: str) -> Subscription: ...

    async def aclose(self) -> None: ...


class _Queue:
    """One subscriber's bounded queue; on overflow it is emptied down to one :data:`GAP`."""

    def __init__(self, fanout: _Fanout, channels: tuple[str, ...]) -> None:
        self._fanout = fanout
        self.channels = channels
        self._q: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_MAX)

    def put(self, data: bytes) -> None:
        try:
            self._q.put_nowait(data)
        except asyncio.QueueFull:
            while not self._q.empty():
                self._q.get_nowait()
            self._q.put_nowait(GAP)

    async def get(self) -> bytes:
        return await self._q.get()

    async def aclose(self) -> None:
        await self._fanout.remove(self)


class _Fanout:
    """Local subscribers by channel; ``on_first`` / ``on_last`` tell a transport when a
    channel gains its first or loses its last local subscriber."""

    def __init__(self) -> None:
        self.subs: dict[str, set[_Queue]] = defaultdict(set)

    def deliver(self, channel: str, data: bytes) -> None:
        for q in tuple(self.subs.get(channel, ())):
            q.put(data)

    async def add(self, channels: tuple[str, ...]) -> _Queue:
        q = _Queue(self, channels)
        fresh = [c for c in channels if not self.subs.get(c)]
        for c in channels:
            self.subs[c].add(q)
        await self.on_first(fresh)
        return q

    async def remove(self, q: _Queue) -> None:
        emptied = []
        for c in q.channels:
            subs = self.subs.get(c)
            if subs is not None:
                subs.discard(q)
                if not subs:
                    del self.subs[c]
                    emptied.append(c)
        await self.on_last(emptied)

    async def on_first(self, channels: list[str]) -> None:
        return None

    async def on_last(self, channels: list[str]) -> None:
        return None


class MemoryBus:
    """One process: the embedded default."""

    def __init__(self) -> None:
        self._fanout = _Fanout()

    async def publish(self, channel: str, data: bytes) -> None:
        self._fanout.deliver(channel, data)

    async def subscribe(self, *channels: str) -> Subscription:
        return await self._fanout.add(channels)

    async def aclose(self) -> None:
        return None


class _RedisFanout(_Fanout):
    def __init__(self, bus: RedisBus) -> None:
        super().__init__()
        self._bus = bus

    async def on_first(self, channels: list[str]) -> None:
        if channels:
            await self._bus._listen(channels)

    async def on_last(self, channels: list[str]) -> None:
        if channels:
            await self._bus._unlisten(channels)


class RedisBus:
    """Several processes: Redis pub/sub. One pub/sub connection per process, shared by all
    its subscribers, so a thousand open chats cost one connection, not a thousand."""

    def __init__(self, url: str, *, prefix: str = "opp:") -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url)
        self._pubsub = self._redis.pubsub()
        self._prefix = f"{prefix}bus:"
        self._fanout = _RedisFanout(self)
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._confirmed: dict[str, asyncio.Event] = {}

    async def publish(self, channel: str, data: bytes) -> None:
        await self._redis.publish(self._prefix + channel, data)

    async def subscribe(self, *channels: str) -> Subscription:
        q = await self._fanout.add(channels)
        # Return only once Redis confirmed: a caller that subscribes, then reads the store,
        # must not miss an event published between the two.
        waits = [self._confirmed[self._prefix + c].wait() for c in channels]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), 10.0)
        except BaseException:
            await q.aclose()
            raise
        return q

    async def _listen(self, channels: list[str]) -> None:
        names = [self._prefix + c for c in channels]
        for name in names:
            self._confirmed.setdefault(name, asyncio.Event())
        async with self._lock:
            await self._pubsub.subscribe(*names)
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(), name="opportune-bus")

    async def _unlisten(self, channels: list[str]) -> None:
        names = [self._prefix + c for c in channels]
        for name in names:
            self._confirmed.pop(name, None)
        async with self._lock:
            await self._pubsub.unsubscribe(*names)

    async def _read(self) -> None:
        n = len(self._prefix)
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: subscribers are told to catch up from the store
                log.exception("bus: lost the Redis subscription; retrying")
                for subs in tuple(self._fanout.subs.values()):
                    for q in tuple(subs):
                        q.put(GAP)
                await asyncio.sleep(1.0)
                continue
            if msg is None:
                continue
            channel = msg["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode()
            if msg["type"] == "subscribe":
                event = self._confirmed.get(channel)
                if event is not None:
                    event.set()
            elif msg["type"] == "message":
                self._fanout.deliver(channel[n:], msg["data"])

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()
        await self._redis.aclose()
