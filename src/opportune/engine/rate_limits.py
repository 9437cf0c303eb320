"""Rate limits: token buckets per client IP and per site on ``/v1/events``, per API key on
the admin API; in this process's memory, or shared by every process through Redis.

A bucket of ``limit`` holds at most ``limit.burst`` tokens and refills ``limit.per_s`` a
second; a request takes one token from each bucket it counts against, or, when any of them
has less than one, takes none and is told how long until it would have one (its 429's
``Retry-After``). All-or-nothing, so a refused request does not drain its other buckets.

- Memory (one process, the default): a dict of ``[tokens, at]`` per key; ≈ 1 µs a check.
  Buckets idle long enough to be full again are forgotten when the dict reaches
  ``max_keys``, so a flood of new IPs costs bounded memory.
- Redis (``OPPORTUNE_REDIS_URL``, several processes): one Lua script per request checks
  and takes from all its buckets atomically (a hash ``{prefix}rl:<key>`` with the tokens
  and the time, expiring once it would be full). Chosen over INCR + EXPIRE per fixed
  window because a window lets twice the rate through at its edges and answers a coarse
  Retry-After; the script costs one round trip (measured in docs/api.md). The processes'
  clocks (time.time, one host or NTP) stamp the buckets. If Redis fails, the request is
  let through (logged): limits protect the service, they must not take it down.

>>> limiter = MemoryLimiter()
>>> per_ip = Limit("per_ip", per_s=1.0, burst=2.0)
>>> [limiter.take([("ip:1.2.3.4", per_ip)], now=100.0) for _ in range(3)]
[None, None, Refusal(limit='per_ip', retry_after_s=1.0)]
>>> limiter.take([("ip:1.2.3.4", per_ip)], now=101.0) is None  # a second later: one token
True
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


class Limit(NamedTuple):
    """A bucket's kind: its name (said in the 429), refill per second, capacity."""

    name: str
    per_s: float
    burst: float


class Refusal(NamedTuple):
    """A request over ``limit``; a token is back in ``retry_after_s`` seconds."""

    limit: str
    retry_after_s: float

    @property
    def retry_after(self) -> str:
        """The ``Retry-After`` header: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


Checks = Sequence[tuple[str, Limit]]  # (bucket key, its limit)


class MemoryLimiter:
    """Token buckets in this process."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, at, full again at]

    def take(self, checks: Checks, now: float) -> Refusal | None:
        """Take a token from every bucket of ``checks``, or none and say which refused."""
        buckets = self._buckets
        worst: Refusal | None = None
        found = []
        for key, limit in checks:
            b = buckets.get(key)
            if b is None:
                if len(buckets) >= self.max_keys:
                    self._forget(now)
                b = buckets[key] = [limit.burst, now, now]
            tokens = b[0] + (now - b[1]) * limit.per_s
            if tokens > limit.burst:
                tokens = limit.burst
            b[0], b[1] = tokens, now
            if tokens < 1.0:
                wait = (1.0 - tokens) / limit.per_s
                if worst is None or wait > worst.retry_after_s:
                    worst = Refusal(limit.name, wait)
            found.append((b, limit))
        if worst is not None:
            return worst
        for b, limit in found:
            b[0] -= 1.0
            b[2] = now + (limit.burst - b[0]) / limit.per_s
        return None

    async def check(self, checks: Checks) -> Refusal | None:
        """``take`` now (the interface the Redis limiter shares)."""
        return self.take(checks, time.time())

    def _forget(self, now: float) -> None:
        """Drop the buckets full again by now (they would start full anyway); if that
        frees too little, the older half (a flood of new keys: they restart full)."""
        buckets = self._buckets
        for key in [k for k, b in buckets.items() if b[2] <= now]:
            del buckets[key]
        if len(buckets) >= self.max_keys:
            for key in sorted(buckets, key=lambda k: buckets[k][1])[: len(buckets) // 2]:
                del buckets[key]

    async def aclose(self) -> None:
        return None


# KEYS: the buckets; ARGV: now (ms), then per bucket its refill per ms and capacity.
# Answers {} when every bucket gave a token, else {index of the worst (1-based), wait ms}.
_TAKE = """
local now = tonumber(ARGV[1])
local tokens = {}
local worst, wait = 0, 0
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local b = redis.call('HMGET', key, 'v', 't')
  local v = burst
  if b[1] then
    v = math.min(burst, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * rate)
  end
  tokens[i] = v
  if v < 1 then
    local w = (1 - v) / rate
    if w > wait then worst, wait = i, w end
  end
end
if worst > 0 then return {worst, tostring(wait)} end
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local v = tokens[i] - 1
  redis.call('HSET', key, 'v', tostring(v), 't', ARGV[1])
  redis.call('PEXPIRE', key, math.ceil((burst - v) / rate) + 1000)
end
return {}
"""


class RedisLimiter:
    """Token buckets in Redis, shared by every process of the deployment."""

    def __init__(self, url: str, *, prefix: str) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url)
        self._prefix = prefix + "rl:"
        self._take: Any = self._redis.register_script(_TAKE)
        self._warned_at = 0.0

    async def check(self, checks: Checks) -> Refusal | None:
        """Take a token from every bucket of ``checks`` atomically, or say which refused."""
        now_ms = int(time.time() * 1000)
        args: list[Any] = [now_ms]
        for _, limit in checks:
            args += [limit.per_s / 1000.0, limit.burst]
        try:
            answer = await self._take(keys=[self._prefix + k for k, _ in checks], args=args)
        except Exception:  # Redis away: let the request through, say so once a minute
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("rate limits not checked: Redis unavailable", exc_info=True)
            return None
        if not answer:
            return None
        index, wait_ms = int(answer[0]), float(answer[1])
        return Refusal(checks[index - 1][1].name, wait_ms / 1000.0)

    async def aclose(self) -> None:
        await self._redis.aclose()


Limiter = MemoryLimiter | RedisLimiter
