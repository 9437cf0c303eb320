"""Faults of one commit, made from outside the server by a trigger the test installs in its
own PostgreSQL: a commit slower than any Redis lock's lifetime while the visitor's next
batches go to the other process, and a first transaction that fails after the client
timed out and resent. Every acknowledged event is stored exactly once, and the visitor's
visits are what they would have been had the batches come one after another."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, text

from opportune.engine.live import LOCK_MS
from opportune.store.db import make_engine
from opportune.store.schema import events, sessions

pytestmark = [pytest.mark.postgres]


def _body(visitor: str, batch: int, ts: int, per: int = 5) -> bytes:
    evs: list[dict[str, Any]] = [
        {"id": f"{batch}-{k}", "type": "click", "ts": ts + k} for k in range(per)
    ]
    evs[0].update(type="page_view", url=f"https://bank.example/p{batch}")
    return json.dumps(
        {
            "siteKey": "demo-site-key",
            "visitorId": visitor,
            "sentAt": int(time.time() * 1000),
            "events": evs,
        }
    ).encode()


def _post(url: str, body: bytes, timeout: float) -> httpx.Response | None:
    """The answer, or None: the client gave up (timed out) or the connection failed."""
    try:
        return httpx.post(url + "/v1/events", content=body, timeout=timeout)
    except httpx.HTTPError:
        return None


def _trigger(engine: Engine, visitor: str, body: str) -> None:
    """Once, on the first event row of ``visitor`` written after this: ``body`` (PL/pgSQL)."""
    with engine.begin() as c:
        c.execute(text("CREATE SEQUENCE fault_once"))
        c.execute(
            text(
                "CREATE FUNCTION fault_once() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.visitor_id = '{visitor}' AND nextval('fault_once') = 1 THEN {body} "
                "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        c.execute(
            text(
                "CREATE TRIGGER fault_once BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION fault_once()"
            )
        )


def _until_sleeping(engine: Engine) -> None:
    """Wait until a transaction is in the trigger's ``pg_sleep`` (a loaded machine may take
    a while to get there)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with engine.connect() as c:
            n = c.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
            ).scalar_one()
        if n:
            return
        time.sleep(0.05)
    pytest.fail("the slow commit never reached its trigger")


def _stored(engine: Engine, visitor: str) -> dict[str, int]:
    with engine.connect() as c:
        rows = c.execute(select(events.c.event_id).where(events.c.visitor_id == visitor)).all()
    out: dict[str, int] = {}
    for (eid,) in rows:
        out[eid] = out.get(eid, 0) + 1
    return out


@pytest.fixture
def pg_engine(own_postgres) -> Iterator[Engine]:
    eng = make_engine(own_postgres.url)
    yield eng
    eng.dispose()


@pytest.mark.redis
def test_a_commit_slower_than_the_lock_with_the_visitors_next_batches_on_the_other_process(
    own_postgres, own_redis, serve, pg_engine
) -> None:
    """Process a's commit of batch 1 sleeps past the visitor's Redis lock (the trigger
    holds a's transaction, which holds the visitor's row). The client gives up on a after
    1 s. Once a's lock has expired, a second tab of the visitor sends batch 2 to b, and
    the client resends batch 1 to b: b gets the lock and judges on the state a had not yet
    saved (one visit). Its write waits for a's transaction, is refused because the
    visitor's version moved on, and is judged again on the database's state — so batch 2
    starts the third visit (25 minutes after the second) instead of joining a second visit
    b believed in, and the resend of batch 1 is answered as duplicates."""
    a, b = (
        serve(name, database_url=own_postgres.url, redis_url=own_redis.url, ready=False)
        for name in ("a", "b")
    )
    a.ready()
    b.ready()
    vid, per = "slow-1", 5
    t0 = int(time.time() * 1000) - 55 * 60_000
    first = _post(a.url, _body(vid, 0, t0), 30)
    assert first is not None and first.json()["visitNumber"] == 1
    sleep_s = LOCK_MS / 1000 + 5
    _trigger(pg_engine, vid, f"PERFORM pg_sleep({sleep_s});")
    acked: dict[int, dict[str, Any]] = {0: first.json()}
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(_post, a.url, _body(vid, 1, t0 + 25 * 60_000), 1.0)
        assert slow.result() is None  # the client timed out; a is still committing
        _until_sleeping(pg_engine)  # a's transaction is in the trigger, holding the row
        time.sleep(LOCK_MS / 1000 + 0.2)  # a's lock has expired by now; its commit has not
        sent = time.monotonic()
        tab2 = pool.submit(_post, b.url, _body(vid, 2, t0 + 50 * 60_000), 60)
        time.sleep(0.2)
        resend = _post(b.url, _body(vid, 1, t0 + 25 * 60_000), 60)
        second = tab2.result()
        waited = time.monotonic() - sent
    assert resend is not None and resend.status_code == 200, resend and resend.text
    assert second is not None and second.status_code == 200, second and second.text
    acked[1], acked[2] = resend.json(), second.json()
    assert (acked[1]["accepted"], acked[1]["duplicates"]) == (0, per)  # a had stored it
    assert acked[2]["accepted"] == per
    assert acked[2]["visitNumber"] == 3
    counts = _stored(pg_engine, vid)
    assert counts == {f"{b}-{k}": 1 for b in acked for k in range(per)}
    with pg_engine.connect() as c:
        visits = c.execute(
            select(sessions.c.number, sessions.c.event_count)
            .where(sessions.c.visitor_id == vid)
            .order_by(sessions.c.number)
        ).all()
        version = c.execute(
            text("SELECT version FROM visitors WHERE id = :v"), {"v": vid}
        ).scalar_one()
    assert [tuple(v) for v in visits] == [(1, per), (2, per), (3, per)]
    assert version == 3  # three batches committed, each on the state of the one before
    print(
        f"FAULT commit slower than the lock ({sleep_s:.0f} s > {LOCK_MS / 1000:.0f} s), next "
        f"batches on the other process: lost 0, twice 0, visits as sequential; b answered "
        f"the second tab's batch {waited:.2f} s after it was sent (it waited for a's commit)"
    )


@pytest.mark.parametrize("live", ["memory", "redis"])
def test_a_client_timeout_and_resend_while_the_first_transaction_fails(
    own_postgres, own_redis, serve, pg_engine, live: str
) -> None:
    """One process. The first attempt's transaction hangs 2 s, then fails (a serialisation
    failure); the client gave up after 1 s and resent the same batch (another sentAt). The
    resend must not be answered "duplicates" for events that never landed: it is stored,
    once, and a third send is answered duplicates."""
    server = serve(
        "one", database_url=own_postgres.url, redis_url=own_redis.url if live == "redis" else ""
    )
    vid, per = f"fails-{live}", 10
    ts = int(time.time() * 1000) - 60_000
    _trigger(
        pg_engine,
        vid,
        "PERFORM pg_sleep(2); RAISE EXCEPTION 'injected failure' USING ERRCODE = '40001';",
    )
    started = time.monotonic()
    assert _post(server.url, _body(vid, 0, ts, per), 1.0) is None  # timed out
    resend = _post(server.url, _body(vid, 0, ts, per), 30)
    took = time.monotonic() - started
    assert resend is not None and resend.status_code == 200, resend and resend.text
    assert (resend.json()["accepted"], resend.json()["duplicates"]) == (per, 0)
    assert _stored(pg_engine, vid) == {f"0-{k}": 1 for k in range(per)}
    third = _post(server.url, _body(vid, 0, ts, per), 30)
    assert third is not None and (third.json()["accepted"], third.json()["duplicates"]) == (
        0,
        per,
    )
    assert _stored(pg_engine, vid) == {f"0-{k}": 1 for k in range(per)}
    print(
        f"FAULT client timeout + resend while the first transaction fails ({live}): lost 0, "
        f"twice 0, resend stored and answered {took:.2f} s after the first send"
    )
