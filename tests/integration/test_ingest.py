"""Ingestion against real databases: sessions, de-duplication, durability, late events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, select

from opportune.core.events import Batch, Event
from opportune.engine.enrichment import GeoResolver
from opportune.engine.ingest import IngestError, Ingestor
from opportune.engine.live import LiveStore, Loader, RedisLiveStore
from opportune.settings import Settings
from opportune.store.schema import events, sessions, visitors
from opportune.store.writer import GroupCommitWriter
from opportune.workspace.documents import Site

REDIS_URL = "redis://127.0.0.1:6379/15"
NOW = 1_760_000_000_000
MIN = 60_000
SITE = Site(name="shop", key="shop-site-key", origins=["https://shop.example"])
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


class Harness:
    """An ingestor with its own event loop, as a server process has one."""

    def __init__(self, engine: Engine, live: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.prefix = live
        settings = Settings(database_url="sqlite://", max_batch_events=20)
        self.writer = GroupCommitWriter(engine)
        self.ingestor = Ingestor(
            settings=settings,
            engine=engine,
            writer=self.writer,
            geo=GeoResolver(trust_headers=True, mmdb_path=None),
            live=None if live == "memory" else self._redis,
        )

    def _redis(self, loader: Loader) -> LiveStore:
        return RedisLiveStore(REDIS_URL, loader, prefix=self.prefix)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.writer.aclose())
        self.run(self.ingestor.live.aclose())
        self.loop.close()


@pytest.fixture(params=["memory", "redis"])
def live(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test runs with the in-memory live state and with Redis (a fresh namespace)."""
    if request.param == "memory":
        yield "memory"
        return
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(prefix + "*"):
        r.delete(key)
    r.close()


def ev(i: int | str, ts: int, type: str = "page_view", **kw: Any) -> Event:
    if type == "page_view":
        kw.setdefault("url", f"https://shop.example/p{i}")
    return Event(id=f"e{i}", type=type, ts=ts, **kw)  # type: ignore[arg-type]


def batch(evs: list[Event], visitor: str = "v1", sent_at: int = NOW) -> Batch:
    return Batch(site_key=SITE.key, visitor_id=visitor, sent_at=sent_at, events=evs)


def run(h: Harness, b: Batch, now: int = NOW, ua: str = IPHONE, **headers: str):
    return h.run(
        h.ingestor.ingest(
            b, SITE, now_ms=now, headers={"user-agent": ua, **headers}, peer="127.0.0.1"
        )
    )


def test_batch_is_stored_in_order_with_enrichment(engine: Engine, live: str) -> None:
    ing = Harness(engine, live)
    try:
        landing = "https://shop.example/?utm_source=news&utm_medium=email&utm_campaign=spring"
        res = run(
            ing,
            batch(
                [
                    ev(1, NOW - 3000, url=landing, referrer="https://www.google.com/"),
                    ev(2, NOW - 2000, "search", query="device activation", url=landing),
                    ev(3, NOW - 2000, "click", name="Apply", url=landing),
                ]
            ),
            **{"cf-ipcountry": "es", "x-geo-city": "Madrid"},
        )
        assert (res.accepted, res.duplicates, res.refused) == (3, 0, [])
        with engine.connect() as c:
            rows = c.execute(
                select(events.c.event_id, events.c.session_id).order_by(
                    events.c.ts, events.c.received_at, events.c.seq
                )
            ).all()
            s = c.execute(select(sessions)).one()
        assert [r.event_id for r in rows] == ["e1", "e2", "e3"]
        assert {r.session_id for r in rows} == {res.session_id}
        assert (s.device_type, s.browser, s.os) == ("mobile", "Mobile Safari", "iOS")
        assert (s.utm_source, s.utm_medium, s.utm_campaign) == ("news", "email", "spring")
        assert s.referrer_domain == "www.google.com"
        assert (s.country, s.city, s.number, s.event_count, s.page_count) == (
            "ES",
            "Madrid",
            1,
            3,
            1,
        )
    finally:
        ing.close()


def test_retried_batch_adds_nothing_twice_even_after_restart(engine: Engine, live: str) -> None:
    b = batch([ev(1, NOW - 1000), ev(2, NOW - 500)])
    ing = Harness(engine, live)
    try:
        assert run(ing, b).accepted == 2
        again = run(ing, b)
        assert (again.accepted, again.duplicates) == (0, 2)
    finally:
        ing.close()
    # A new process has no memory: the live state is rebuilt from the database.
    ing2 = Harness(engine, live)
    try:
        again = run(ing2, batch([ev(1, NOW - 1000), ev(2, NOW - 500), ev(3, NOW)]), now=NOW + 10)
        assert (again.accepted, again.duplicates) == (1, 2)
        with engine.connect() as c:
            assert c.execute(select(func.count()).select_from(events)).scalar() == 3
            assert c.execute(select(sessions.c.event_count)).scalar() == 3
    finally:
        ing2.close()


def test_sessions_split_after_inactivity_and_visits_are_numbered(engine: Engine, live: str) -> None:
    ing = Harness(engine, live)
    try:
        first = run(ing, batch([ev(1, NOW)]), now=NOW)
        second = run(
            ing, batch([ev(2, NOW + 10 * MIN)], sent_at=NOW + 10 * MIN), now=NOW + 10 * MIN
        )
        third = run(ing, batch([ev(3, NOW + 31 * MIN)], sent_at=NOW + 31 * MIN), now=NOW + 31 * MIN)
        assert first.session_id == second.session_id != third.session_id
        assert (first.visit_number, third.visit_number) == (1, 2)
        # A late event from the first visit (retried from the browser's outbox) joins it.
        late = run(ing, batch([ev(4, NOW + 12 * MIN)], sent_at=NOW + 32 * MIN), now=NOW + 32 * MIN)
        with engine.connect() as c:
            sid = c.execute(select(events.c.session_id).where(events.c.event_id == "e4")).scalar()
            v = c.execute(select(visitors)).one()
        assert late.accepted == 1 and sid == first.session_id
        assert v.session_count == 2
    finally:
        ing.close()


def test_clock_skew_is_corrected_and_bounds_refuse_per_event(engine: Engine, live: str) -> None:
    ing = Harness(engine, live)
    try:
        # The browser's clock is 3 hours slow: its events are still recent once corrected.
        slow = NOW - 3 * 60 * MIN
        res = run(
            ing,
            batch(
                [ev(1, slow - 1000), ev(2, slow - 2 * 60 * MIN), ev(3, slow + 10 * MIN)],
                sent_at=slow,
            ),
        )
        assert res.accepted == 1
        assert [(r.index, r.reason.split(":")[0]) for r in res.refused] == [
            (1, "too old"),
            (2, "in the future"),
        ]
        with engine.connect() as c:
            assert c.execute(select(events.c.ts)).scalar() == NOW - 1000
    finally:
        ing.close()


def test_batch_too_long_is_refused_whole(engine: Engine, live: str) -> None:
    ing = Harness(engine, live)
    try:
        with pytest.raises(IngestError) as info:
            run(ing, batch([ev(i, NOW) for i in range(21)]))
        assert (info.value.status, info.value.path) == (413, "$.events")
        with engine.connect() as c:
            assert c.execute(select(func.count()).select_from(events)).scalar() == 0
    finally:
        ing.close()


def test_concurrent_batches_share_commits_and_all_land(engine: Engine, live: str) -> None:
    ing = Harness(engine, live)

    async def many() -> list[Any]:
        return await asyncio.gather(
            *[
                ing.ingestor.ingest(
                    batch([ev(f"{v}-{k}", NOW - 100 + k) for k in range(10)], visitor=f"v{v}"),
                    SITE,
                    now_ms=NOW,
                    headers={},
                    peer=None,
                )
                for v in range(50)
            ]
        )

    try:
        results = ing.run(many())
        assert sum(r.accepted for r in results) == 500
        assert ing.writer.commits < 50  # batches were grouped
        with engine.connect() as c:
            assert c.execute(select(func.count()).select_from(events)).scalar() == 500
            assert c.execute(select(func.count()).select_from(visitors)).scalar() == 50
    finally:
        ing.close()
