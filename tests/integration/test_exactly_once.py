"""Exactly-once by the database (real SQLite and PostgreSQL, live state in memory and in
Redis): a resend is stored once whatever its ``sentAt`` and whatever the live state knows,
a failed first commit is stored once by the resend, and an event the database cannot store
is refused alone instead of failing its batch for ever."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, create_engine, func, select, text

from opportune.core.events import Batch, Context, Event
from opportune.engine.enrichment import GeoResolver
from opportune.engine.ingest import IngestError, Ingestor
from opportune.engine.live import LiveStore, Loader, RedisLiveStore
from opportune.settings import Settings
from opportune.store.db import make_engine
from opportune.store.schema import event_ids, events, sessions
from opportune.store.writer import GroupCommitWriter
from opportune.workspace.documents import Site

REDIS_URL = "redis://127.0.0.1:6379/15"
NOW = 1_760_000_000_000
SITE = Site(name="shop", key="shop-site-key", origins=["https://shop.example"])


class Process:
    """An ingestor with its own event loop and live state: one server process."""

    def __init__(self, engine: Engine, live: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.prefix = live
        self.writer = GroupCommitWriter(engine)
        self.ingestor = Ingestor(
            settings=Settings(database_url="sqlite://", max_batch_events=20),
            engine=engine,
            writer=self.writer,
            geo=GeoResolver(trust_headers=False, mmdb_path=None),
            live=None if live == "memory" else self._redis,
        )

    def _redis(self, loader: Loader) -> LiveStore:
        return RedisLiveStore(REDIS_URL, loader, prefix=self.prefix)

    def send(self, b: Batch, now: int = NOW) -> Any:
        return self.loop.run_until_complete(self.ingest(b, now))

    def ingest(self, b: Batch, now: int = NOW) -> Any:
        return self.ingestor.ingest(b, SITE, now_ms=now, headers={}, peer=None)

    def close(self) -> None:
        self.loop.run_until_complete(self.writer.aclose())
        self.loop.run_until_complete(self.ingestor.live.aclose())
        self.loop.close()


@pytest.fixture(params=["memory", "redis"])
def live(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield "memory"
        return
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(prefix + "*"):
        r.delete(key)
    r.close()


def ev(i: int | str, ts: int = NOW - 1000, **kw: Any) -> Event:
    kw.setdefault("type", "page_view")
    if kw["type"] == "page_view":
        kw.setdefault("url", f"https://shop.example/p{i}")
    return Event(id=f"e{i}", ts=ts, **kw)


def batch(evs: list[Event], visitor: str = "v1", sent_at: int = NOW, **kw: Any) -> Batch:
    return Batch(site_key=SITE.key, visitor_id=visitor, sent_at=sent_at, events=evs, **kw)


def stored(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as c:
        return sorted(c.execute(select(events.c.visitor_id, events.c.event_id)).all())


def test_a_resend_with_another_sent_at_is_stored_once_whatever_the_live_state_knows(
    engine: Engine, live: str
) -> None:
    """The live state of the process taking the resend does not know the events (another
    process stored them; or it died between its commit and saving the state): the
    database's key decides, and the answer says duplicates."""
    a, b = Process(engine, live), Process(engine, live)
    try:
        assert b.send(batch([ev(0)])).accepted == 1  # b holds v1's state from before
        before = _snapshot(b, "v1")
        first = a.send(batch([ev(1), ev(2)]))
        assert (first.accepted, first.duplicates) == (2, 0)
        _restore(b, "v1", before)  # b's view of v1 misses e1 and e2
        # The resend carries another sentAt: every ts moves by 7 s once corrected.
        again = b.send(batch([ev(1), ev(2), ev(3)], sent_at=NOW - 7000), now=NOW + 10)
        assert (again.accepted, again.duplicates, again.refused) == (1, 2, [])
        assert stored(engine) == [("v1", "e0"), ("v1", "e1"), ("v1", "e2"), ("v1", "e3")]
        with engine.connect() as c:
            assert c.execute(select(sessions.c.event_count)).scalar_one() == 4
            assert c.execute(select(func.count()).select_from(event_ids)).scalar_one() == 4
    finally:
        a.close()
        b.close()


def _snapshot(p: Process, vid: str) -> Any:
    live = p.ingestor.live
    if isinstance(live, RedisLiveStore):
        return live._sync.get(live._key(vid))
    return live._items.get(vid)


def _restore(p: Process, vid: str, snap: Any) -> None:
    live = p.ingestor.live
    if isinstance(live, RedisLiveStore):
        live._sync.set(live._key(vid), snap)
    else:
        live._items[vid] = snap


def test_a_batch_judged_on_a_stale_state_is_judged_again_on_the_stored_truth(
    engine: Engine, live: str
) -> None:
    """Per-visitor ordering by the database: process b judged v1 on a state read before a's
    commit (memory: b's own copy; Redis: as if b's lock had expired and it read the state
    before a saved it). b's write is refused at commit (the visitor's version moved on) and
    the batch is judged again on the state reloaded from the database — so it lands in
    the third visit, as it would have sequentially, not in the second one b believed in."""
    t0 = NOW - 55 * 60_000
    a, b = Process(engine, live), Process(engine, live)
    try:
        assert b.send(batch([ev(0, ts=t0)])).visit_number == 1
        before = _snapshot(b, "v1")
        # 25 minutes later (past the 20-minute timeout): a second visit, through a.
        assert a.send(batch([ev(1, ts=t0 + 25 * 60_000)])).visit_number == 2
        _restore(b, "v1", before)
        third = b.send(batch([ev(2, ts=t0 + 50 * 60_000)]))
        assert (third.accepted, third.visit_number) == (1, 3)
        with engine.connect() as c:
            visits = c.execute(
                select(sessions.c.number, sessions.c.event_count).order_by(sessions.c.number)
            ).all()
            version = c.execute(text("SELECT version FROM visitors")).scalar_one()
        assert [tuple(v) for v in visits] == [(1, 1), (2, 1), (3, 1)]
        assert version == 3  # three batches committed, each from the one before
    finally:
        a.close()
        b.close()


def test_a_first_commit_that_failed_is_stored_once_by_the_resend(
    engine: Engine, db_url: str, live: str
) -> None:
    """The first attempt's write fails for real (SQLite: another connection holds the
    write lock past the busy timeout; PostgreSQL: a trigger fails the first row written,
    after a pause); the client resends meanwhile with another sentAt. The resend must not
    be answered "duplicate" for events that never landed, and lands once."""
    sqlite = db_url.startswith("sqlite")
    # SQLite: a writer that gives up on a locked database after 0.5 s.
    eng = (
        create_engine(db_url, connect_args={"check_same_thread": False, "timeout": 0.5})
        if sqlite
        else engine
    )
    p = Process(eng, live)
    try:
        with _first_write_fails(engine, sqlite):

            async def client() -> tuple[Any, Any]:
                t1 = asyncio.ensure_future(p.ingest(batch([ev(1), ev(2)])))
                await asyncio.sleep(0.05)  # the client timed out: it resends
                t2 = asyncio.ensure_future(
                    p.ingest(batch([ev(1), ev(2)], sent_at=NOW - 3000), NOW + 50)
                )
                return await asyncio.gather(t1, t2, return_exceptions=True)

            first, resend = p.loop.run_until_complete(client())
        assert isinstance(first, Exception), first
        assert (resend.accepted, resend.duplicates) == (2, 0)
        assert stored(engine) == [("v1", "e1"), ("v1", "e2")]
        # And once more, now that it is stored: duplicates, nothing added.
        third = p.send(batch([ev(1), ev(2)], sent_at=NOW + 5000), NOW + 100)
        assert (third.accepted, third.duplicates) == (0, 2)
        assert stored(engine) == [("v1", "e1"), ("v1", "e2")]
    finally:
        p.close()
        if eng is not engine:
            eng.dispose()


@contextlib.contextmanager
def _first_write_fails(engine: Engine, sqlite: bool) -> Iterator[None]:
    if sqlite:
        locker = engine.raw_connection()
        locker.cursor().execute("BEGIN IMMEDIATE")
        # Released after the first attempt gave up (0.5 s) and before the resend does.
        timer = threading.Timer(0.8, locker.rollback)
        timer.start()
        try:
            yield
        finally:
            timer.join()
            locker.close()
        return
    with engine.begin() as c:
        c.execute(text("CREATE SEQUENCE fail_once"))
        c.execute(
            text(
                "CREATE FUNCTION fail_once() RETURNS trigger AS $$ BEGIN "
                "IF nextval('fail_once') = 1 THEN PERFORM pg_sleep(0.3); "
                "RAISE EXCEPTION 'injected failure' USING ERRCODE = '40001'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        c.execute(
            text(
                "CREATE TRIGGER fail_once BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION fail_once()"
            )
        )
    try:
        yield
    finally:
        with engine.begin() as c:
            c.execute(text("DROP TRIGGER fail_once ON events"))
            c.execute(text("DROP FUNCTION fail_once()"))
            c.execute(text("DROP SEQUENCE fail_once"))


NUL = chr(0)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "custom", "name": "buy" + NUL},
        {"url": "https://shop.example/" + NUL},
        {"type": "search", "query": "a" + NUL + "b", "url": "https://shop.example/s"},
        {"title": "lone \ud800 surrogate"},
        {"attributes": {"plan": "gold" + NUL}},
        {"attributes": {"pl" + NUL + "an": "gold"}},
        {"type": "identify", "identity": {"email": "a" + NUL + "@b.example"}},
        {"type": "identify", "identity": {"email": "a@b.example"}, "traits": {"x": NUL}},
    ],
)
def test_text_the_database_cannot_store_is_refused_per_event(engine: Engine, bad: dict) -> None:
    from opportune.core.events import Identity

    if "identity" in bad:
        bad = {**bad, "identity": Identity(**bad["identity"])}
    p = Process(engine, "memory")
    try:
        res = p.send(batch([ev(1), ev(2, **bad), ev(3)]))
        assert (res.accepted, res.duplicates) == (2, 0)
        assert [(r.index, r.id) for r in res.refused] == [(1, "e2")]
        assert res.refused[0].reason.startswith("text the database cannot store")
        assert stored(engine) == [("v1", "e1"), ("v1", "e3")]
    finally:
        p.close()


def test_context_text_the_database_cannot_store_refuses_the_batch_with_its_path(
    engine: Engine,
) -> None:
    p = Process(engine, "memory")
    try:
        with pytest.raises(IngestError) as info:
            p.send(batch([ev(1)], context=Context(locale="es" + NUL)))
        assert (info.value.status, info.value.path) == (400, "$.context.locale")
        assert stored(engine) == []
    finally:
        p.close()


def test_an_event_the_database_refuses_is_refused_alone_and_its_batch_lands(
    engine: Engine, db_url: str, live: str
) -> None:
    """The general rule: a storage error caused by one event is charged to that event.
    Here a database constraint the checks know nothing about refuses events named
    ``poison``; the batch sharing its group commit with another visitor's still lands, and
    the resend of the same batch gets the same answer (not a 503 for ever)."""
    with _poison_trigger(engine, db_url.startswith("sqlite")):
        p = Process(engine, live)
        try:

            async def together() -> list[Any]:
                return await asyncio.gather(
                    p.ingest(batch([ev(1), ev(2, type="custom", name="poison"), ev(3)])),
                    p.ingest(batch([ev(9)], visitor="v2")),
                )

            res, other = p.loop.run_until_complete(together())
            assert (res.accepted, other.accepted) == (2, 1)
            assert [(r.index, r.id) for r in res.refused] == [(1, "e2")]
            assert "poison refused" in res.refused[0].reason
            again = p.send(batch([ev(1), ev(2, type="custom", name="poison"), ev(3)]))
            assert (again.accepted, again.duplicates) == (0, 2)
            assert [r.index for r in again.refused] == [1]
            assert stored(engine) == [("v1", "e1"), ("v1", "e3"), ("v2", "e9")]
        finally:
            p.close()


@contextlib.contextmanager
def _poison_trigger(engine: Engine, sqlite: bool) -> Iterator[None]:
    with engine.begin() as c:
        if sqlite:
            c.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.name = 'poison' "
                    "BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
                )
            )
        else:
            c.execute(
                text(
                    "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poison refused' "
                    "USING ERRCODE = '23514'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            c.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON events "
                    "FOR EACH ROW EXECUTE FUNCTION poison()"
                )
            )
    try:
        yield
    finally:
        with engine.begin() as c:
            c.execute(text("DROP TRIGGER poison" + ("" if sqlite else " ON events")))
            if not sqlite:
                c.execute(text("DROP FUNCTION poison()"))


def test_the_migration_backfills_event_ids_once_per_key(tmp_path: Any) -> None:
    """Existing events, one of them stored twice (a resend with another sentAt before the
    key existed), give one key each."""
    from opportune.store.db import migrate

    eng = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        migrate(eng, "0008")
        with eng.begin() as c:
            for vid, ts, eid in [("v1", 1, "a"), ("v1", 5, "a"), ("v1", 2, "b"), ("v2", 3, "a")]:
                c.execute(
                    events.insert().values(
                        visitor_id=vid,
                        ts=ts,
                        event_id=eid,
                        site_id="s",
                        session_id="x",
                        received_at=ts,
                        seq=0,
                        type="click",
                    )
                )
        migrate(eng)
        with eng.connect() as c:
            rows = sorted(c.execute(select(event_ids)).all())
        assert rows == [("s", "v1", "a", 1), ("s", "v1", "b", 2), ("s", "v2", "a", 3)]
    finally:
        eng.dispose()
