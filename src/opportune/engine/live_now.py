"""Live Now: a board of the visitors on the site now, one small summary per visitor.

The ingestion pipeline notes each visitor after a batch is committed (:meth:`LiveBoard.note`:
in memory, no I/O: it only copies what the batch's answer and the live state already hold).
The board is bounded (the least recently seen visitor goes first) and forgets visitors idle
longer than its window. Every note takes a version; a reader asks for what changed since
the version it last saw (:meth:`LiveBoard.changes`), so the page gets deltas, never a poll
per visitor. The board is this process's: with several server processes each shows its own
visitors (docs/live-now.md).

>>> board = LiveBoard(window_ms=60_000, max_visitors=10)
>>> board.put(Summary("site", "v1", last_at=1_000))
>>> rows, version = board.snapshot(now_ms=2_000)
>>> [r["visitorId"] for r in rows], version
(['v1'], 1)
>>> board.changes(version, now_ms=70_000)
([], ['v1'], 2)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from opportune.core.events import Batch
    from opportune.engine.answer import IngestResult
    from opportune.engine.live import VisitorLive

log = logging.getLogger(__name__)
DEFAULT_WINDOW_MS: Final = 10 * 60_000
FLUSH_S: Final = 0.25
# A Redis reader asks for what was written from this long before its last read: a flush of
# another process landing meanwhile is not missed (the page upserts a row sent twice).
MARGIN_MS: Final = 2_000
GONE_KEPT_MS: Final = 60_000
DEFAULT_MAX_VISITORS: Final = 100_000
# The facts of the visit (core/journey.py ``facts``) a row shows, under the same names.
FACTS: Final = (
    "device", "browser", "os", "country", "city", "referrer", "referrerDomain",
    "utmSource", "utmMedium", "utmCampaign",
)  # fmt: skip


@dataclass(slots=True)
class Summary:
    """One visitor as Live Now shows them (``facts``: device, place, referrer, campaign)."""

    site_id: str
    visitor_id: str
    session_id: str | None = None
    customer_id: str | None = None
    url: str | None = None
    title: str | None = None
    started_at: int = 0
    last_at: int = 0
    visit_number: int = 1
    facts: dict[str, Any] = field(default_factory=dict)
    segments: Sequence[str] = ()
    scores: dict[str, float] = field(default_factory=dict)
    showing: dict[str, str] | None = None
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "siteId": self.site_id, "visitorId": self.visitor_id, "sessionId": self.session_id,
            "identified": self.customer_id is not None, "customerId": self.customer_id,
            "url": self.url, "title": self.title, "startedAt": self.started_at,
            "lastAt": self.last_at, "visitNumber": self.visit_number,
            "returning": self.visit_number > 1, **{k: self.facts.get(k) for k in FACTS},
            "segments": list(self.segments), "scores": self.scores, "showing": self.showing,
        }  # fmt: skip


class LiveBoard:
    """The visitors seen in the last ``window_ms``, at most ``max_visitors`` of them."""

    shared: Final = False  # this process's visitors only

    def __init__(
        self, *, window_ms: int = DEFAULT_WINDOW_MS, max_visitors: int = DEFAULT_MAX_VISITORS
    ) -> None:
        if window_ms <= 0 or max_visitors <= 0:
            raise ValueError("window_ms and max_visitors must be positive")
        self.window_ms = window_ms
        self.max_visitors = max_visitors
        # Least recently noted first: expiry and the bound drop from the front, and the
        # changes since a version are a walk back from the end.
        self._rows: OrderedDict[str, Summary] = OrderedDict()
        self._gone: deque[tuple[int, str]] = deque(maxlen=max_visitors)
        self._version = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def version(self) -> int:
        return self._version

    def put(self, summary: Summary) -> None:
        """Add or replace a visitor's summary (newest), dropping the oldest over the bound."""
        self._version += 1
        summary.version = self._version
        self._rows[summary.visitor_id] = summary
        self._rows.move_to_end(summary.visitor_id)
        while len(self._rows) > self.max_visitors:
            self._drop(next(iter(self._rows)))

    def note(
        self, site_id: str, batch: Batch, state: VisitorLive, result: IngestResult, now_ms: int
    ) -> None:
        """The pipeline's hook after a batch's commit: the visitor as the answer saw them."""
        if result.session_id is None:
            return
        old = self._rows.get(result.visitor_id)
        same_visit = old is not None and old.session_id == result.session_id
        url, title = (old.url, old.title) if same_visit and old is not None else (None, None)
        for ev in reversed(batch.events):
            if ev.type == "page_view" and ev.url:
                url, title = ev.url, ev.title
                break
        j = state.journey
        current = j is not None and j.session_id == result.session_id
        facts = {k: j.facts[k] for k in FACTS if k in j.facts} if current and j else {}
        if current and j is not None and j.url:
            url = j.url
        shown = state.engagement.showing
        self.put(
            Summary(
                site_id, result.visitor_id, result.session_id, result.customer_id, url, title,
                state.track.started_at, max(state.track.last_at, 0), result.visit_number, facts,
                tuple(result.segments),
                {o: round(s.get("probability", 0.0), 4) for o, s in result.scores.items()},
                {"map": shown.map, "channel": shown.channel} if shown.active else None,
            )
        )  # fmt: skip
        self.expire(now_ms)

    def get(self, visitor_id: str) -> Summary | None:
        return self._rows.get(visitor_id)

    def expire(self, now_ms: int) -> None:
        """Forget the visitors whose last event is older than the window."""
        horizon = now_ms - self.window_ms
        while self._rows:
            first = next(iter(self._rows.values()))
            if first.last_at >= horizon:
                # Noted order is last-event order up to clock skew between batches; a
                # straggler behind a fresh one waits for it: at most a moment late.
                return
            self._drop(first.visitor_id)

    def _drop(self, visitor_id: str) -> None:
        del self._rows[visitor_id]
        self._version += 1
        self._gone.append((self._version, visitor_id))

    def snapshot(self, now_ms: int) -> tuple[list[dict[str, Any]], int]:
        """Every visitor on the board (most recently seen first) and the board's version."""
        self.expire(now_ms)
        return [s.to_json() for s in reversed(self._rows.values())], self._version

    def changes(
        self, since: int, now_ms: int
    ) -> tuple[list[dict[str, Any]], list[str], int] | None:
        """The visitors noted after version ``since``, the ids gone since, the version now;
        None when ``since`` is older than the removals kept (read a snapshot again)."""
        self.expire(now_ms)
        if self._gone and self._gone[0][0] > since + 1 and len(self._gone) == self._gone.maxlen:
            return None
        changed: list[dict[str, Any]] = []
        for s in reversed(self._rows.values()):
            if s.version <= since:
                break
            changed.append(s.to_json())
        gone = [vid for v, vid in self._gone if v > since and vid not in self._rows]
        return changed, gone, self._version

    async def read_snapshot(self, now_ms: int) -> tuple[list[dict[str, Any]], int]:
        """:meth:`snapshot`, as a reader of the Redis board calls it."""
        return self.snapshot(now_ms)

    async def read_changes(
        self, since: int, now_ms: int
    ) -> tuple[list[dict[str, Any]], list[str], int] | None:
        return self.changes(since, now_ms)

    async def visitors(self, now_ms: int) -> int:
        """How many visitors are on the board now (``/metrics``)."""
        self.expire(now_ms)
        return len(self._rows)

    async def read_one(self, visitor_id: str) -> dict[str, Any] | None:
        found = self._rows.get(visitor_id)
        return found.to_json() if found is not None else None


class RedisLiveNow:
    """The board shared by every process through Redis: a hash of summaries, a sorted set
    by last event (expiry, the bound), one by write time (deltas) and one of removals.
    This process's notes go to its in-memory ``board`` (the hot path never waits on Redis)
    and a flusher (:meth:`run`) writes them every ``flush_s``; the cursor is a time."""

    shared: Final = True

    def __init__(
        self, board: LiveBoard, url: str, *, prefix: str, flush_s: float = FLUSH_S
    ) -> None:
        import redis.asyncio as aioredis

        self.board = board
        self.window_ms = board.window_ms
        self.flush_s = flush_s
        self._redis = aioredis.from_url(url)
        self._rows = f"{prefix}live-now:rows"
        self._seen = f"{prefix}live-now:seen"
        self._written = f"{prefix}live-now:written"
        self._gone = f"{prefix}live-now:gone"
        self._flushed = 0  # the local board's version written so far

    async def flush(self, now_ms: int) -> int:
        """Write what this process noted since the last flush; drop the idle and the
        least recently seen over the bound. The number of summaries written."""
        found = self.board.changes(self._flushed, now_ms)
        if found is None:  # the local board dropped more than it remembers: write it all
            changed, version = self.board.snapshot(now_ms)
        else:
            changed, _, version = found  # a local drop is not a global one
        if changed:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(self._rows, mapping={r["visitorId"]: json.dumps(r) for r in changed})
            pipe.zadd(self._seen, {r["visitorId"]: r["lastAt"] for r in changed}, gt=True)
            pipe.zadd(self._written, {r["visitorId"]: now_ms for r in changed})
            await pipe.execute()
        self._flushed = version
        await self._expire(now_ms)
        return len(changed)

    async def _expire(self, now_ms: int) -> None:
        r = self._redis
        ids = await r.zrangebyscore(self._seen, "-inf", f"({now_ms - self.window_ms}")
        over = await r.zcard(self._seen) - len(ids) - self.board.max_visitors
        if over > 0:
            ids += await r.zrange(self._seen, len(ids), len(ids) + over - 1)
        pipe = r.pipeline(transaction=False)
        if ids:
            pipe.zrem(self._seen, *ids)
            pipe.zrem(self._written, *ids)
            pipe.hdel(self._rows, *ids)
            pipe.zadd(self._gone, dict.fromkeys(ids, now_ms))
        pipe.zremrangebyscore(self._gone, "-inf", f"({now_ms - GONE_KEPT_MS}")
        await pipe.execute()

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``flush_s`` until ``stop`` (and once more then)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_s)
            try:
                await self.flush(int(time.time() * 1000))
            except Exception:  # Redis away: the notes wait in the local board
                log.exception("could not write Live Now to Redis")
            if stop.is_set():
                return

    async def _rows_of(self, ids: list[Any]) -> list[dict[str, Any]]:
        if not ids:
            return []
        return [json.loads(raw) for raw in await self._redis.hmget(self._rows, ids) if raw]

    async def read_snapshot(self, now_ms: int) -> tuple[list[dict[str, Any]], int]:
        ids = await self._redis.zrevrangebyscore(self._seen, "+inf", now_ms - self.window_ms)
        return await self._rows_of(ids), now_ms

    async def read_changes(
        self, since: int, now_ms: int
    ) -> tuple[list[dict[str, Any]], list[str], int] | None:
        """Summaries written from shortly before ``since``, ids gone since; None when
        ``since`` is older than the removals kept."""
        if since < now_ms - GONE_KEPT_MS + MARGIN_MS:
            return None
        start = f"({since - MARGIN_MS}"
        ids = await self._redis.zrangebyscore(self._written, start, "+inf")
        removed = await self._redis.zrangebyscore(self._gone, start, "+inf")
        horizon = now_ms - self.window_ms
        changed = [row for row in await self._rows_of(ids) if row["lastAt"] >= horizon]
        back = {row["visitorId"] for row in changed}  # gone, then seen again
        return changed, [g.decode() for g in removed if g.decode() not in back], now_ms

    async def visitors(self, now_ms: int) -> int:
        """How many visitors of every process were seen within the window."""
        return int(await self._redis.zcount(self._seen, now_ms - self.window_ms, "+inf"))

    async def read_one(self, visitor_id: str) -> dict[str, Any] | None:
        raw = await self._redis.hget(self._rows, visitor_id)
        return json.loads(raw) if raw else None

    async def aclose(self) -> None:
        await self._redis.aclose()
