"""Several server processes on one PostgreSQL and one Redis: interleaved batches for the same
visitors end exactly as if they had been sent one after another."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import create_engine, func, select, text

from opportune.store.schema import events, sessions, visitors

REDIS_URL = "redis://127.0.0.1:6379/15"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def servers(pg_url: str, tmp_path: Path, n: int = 2) -> Iterator[tuple[list[str], list]]:
    """``n`` server processes on one PostgreSQL and one Redis: their URLs and processes."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    procs, urls, logs = [], [], []
    for i in range(n):
        port = free_port()
        env = {
            **os.environ,
            "OPPORTUNE_DATABASE_URL": pg_url,
            "OPPORTUNE_REDIS_URL": REDIS_URL,
            "OPPORTUNE_REDIS_PREFIX": prefix,
            "OPPORTUNE_DATA_DIR": str(tmp_path / f"d{i}"),
            "OPPORTUNE_API_KEY": "k",
        }
        log = tmp_path / f"server{i}.log"
        with log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "opportune.cli", "serve", "--port", str(port)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                )
            )
        logs.append(log)
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, proc, log in zip(urls, procs, logs, strict=True):
            deadline = time.time() + 90  # a loaded 2-core machine starts slowly
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield urls, procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=30)
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(prefix + "*"):
            r.delete(key)
        r.close()


@pytest.fixture
def two_servers(pg_url: str, tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    with servers(pg_url, tmp_path) as (urls, _procs):
        yield urls, pg_url


@pytest.mark.postgres
@pytest.mark.redis
def test_interleaved_batches_on_two_processes_equal_the_sequential_result(two_servers) -> None:
    urls, db_url = two_servers
    now = int(time.time() * 1000)
    n_visitors, n_batches, per_batch = 12, 6, 5

    def body(v: int, b: int) -> str:
        return json.dumps(
            {
                "siteKey": "demo-site-key",
                "visitorId": f"mp-{v}",
                "sentAt": now,
                "events": [
                    {
                        "id": f"{v}-{b}-{k}",
                        "type": "page_view" if k == 0 else "click",
                        "ts": now - 60_000 + b * 1000 + k,
                        "url": f"https://x.example/{b}",
                    }
                    for k in range(per_batch)
                ],
            }
        )

    async def send_all() -> list[dict]:
        async with httpx.AsyncClient(timeout=30) as client:
            jobs = []
            for v in range(n_visitors):
                for b in range(n_batches):
                    # Every batch goes to both processes at once: one stores it, the other
                    # must see it as a duplicate, whichever wins.
                    for url in urls:
                        jobs.append(client.post(url + "/v1/events", content=body(v, b)))
            responses = await asyncio.gather(*jobs)
        assert all(r.status_code == 200 for r in responses), [
            r.text for r in responses if r.status_code != 200
        ][:3]
        return [r.json() for r in responses]

    results = asyncio.run(send_all())
    assert sum(r["accepted"] for r in results) == n_visitors * n_batches * per_batch
    assert sum(r["duplicates"] for r in results) == n_visitors * n_batches * per_batch
    eng = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as c:
            assert c.execute(select(func.count()).select_from(events)).scalar_one() == (
                n_visitors * n_batches * per_batch
            )
            rows = c.execute(
                select(
                    sessions.c.visitor_id,
                    sessions.c.number,
                    sessions.c.event_count,
                    sessions.c.page_count,
                )
            ).all()
            vis = c.execute(select(visitors.c.id, visitors.c.session_count)).all()
    finally:
        eng.dispose()
    # Sequentially: one visit per visitor, every event counted once.
    assert sorted(rows) == sorted(
        (f"mp-{v}", 1, n_batches * per_batch, n_batches) for v in range(n_visitors)
    )
    assert sorted(vis) == sorted((f"mp-{v}", 1) for v in range(n_visitors))


PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.0.0 Mobile Safari/537.36"
)


@pytest.mark.postgres
@pytest.mark.redis
def test_segments_and_outcomes_on_two_processes_equal_the_sequential_result(two_servers) -> None:
    from opportune.api.app import EXAMPLE_WORKSPACE
    from opportune.core.conditions import Context
    from opportune.core.journey import JourneyEvent
    from opportune.core.rules import evaluate_history
    from opportune.engine.rules import RuleBook
    from opportune.workspace import load_workspace

    urls, db_url = two_servers
    now = int(time.time() * 1000)
    base = "https://x.example/demo/"
    n_visitors = 10

    def script(v: int) -> list[dict]:
        """Each visitor's events, in order; what they do depends on v."""
        t = now - 4 * 60_000
        evs: list[dict] = [
            {"type": "page_view", "url": base + ("index.html?utm_medium=cpc" if v % 2 else "")},
            {"type": "page_view", "url": base + "product.html"},
            {"type": "page_view", "url": base + "apply.html"},
        ]
        if v % 3:
            evs.append({"type": "search", "query": "Travel alert", "url": base + "search.html"})
        for _ in range(v % 4):
            evs.append({"type": "form_error", "name": "loan", "url": base + "apply.html"})
        if v % 5 < 2:
            evs.append({"type": "custom", "name": "loan_submitted", "attributes": {"amount": v}})
        return [{**e, "id": f"{v}-{i}", "ts": t + i * 7_000} for i, e in enumerate(evs)]

    def body(v: int, chunk: list[dict]) -> str:
        return json.dumps(
            {"siteKey": "demo-site-key", "visitorId": f"sg-{v}", "sentAt": now, "events": chunk}
        )

    async def send_all() -> None:
        async with httpx.AsyncClient(timeout=30, headers={"user-agent": PHONE}) as client:
            # One visitor's batches go in order (as the snippet sends them); visitors
            # interleave, and every batch goes to both processes at once.
            async def visitor(v: int) -> None:
                evs = script(v)
                for k in range(0, len(evs), 2):
                    rs = await asyncio.gather(
                        *[
                            client.post(u + "/v1/events", content=body(v, evs[k : k + 2]))
                            for u in urls
                        ]
                    )
                    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]

            await asyncio.gather(*[visitor(v) for v in range(n_visitors)])

    asyncio.run(send_all())
    rules = RuleBook(load_workspace(EXAMPLE_WORKSPACE)).ruleset
    for v in range(n_visitors):
        history = [
            JourneyEvent(
                e["type"],
                e["ts"],
                e.get("url"),
                e.get("name"),
                e.get("query"),
                e.get("attributes", {}),
                e["id"],
            )
            for e in script(v)
        ]
        landing = history[0].url or ""
        facts = {"device": "mobile", "landingUrl": landing}
        if "utm_medium=cpc" in landing:
            facts["utmMedium"] = "cpc"
        expected = evaluate_history(
            rules, history, Context(facts=facts, visit_number=1, started_at=history[0].ts)
        )
        for url in urls:
            view = httpx.get(f"{url}/v1/visitors/sg-{v}/live", headers={"X-API-Key": "k"}).json()
            assert {s["name"] for s in view["segments"]} == {
                k for k, held in expected.segments.items() if held
            }, f"visitor {v} on {url}"
            assert {o["name"] for o in view["outcomes"]} == set(expected.outcomes)
    eng = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as c:
            rows = c.execute(
                text(
                    "SELECT visitor_id, segment, change, count(*) FROM segment_changes "
                    "GROUP BY visitor_id, segment, change"
                )
            ).all()
            won = c.execute(text("SELECT count(*) FROM outcome_achievements")).scalar_one()
    finally:
        eng.dispose()
    assert all(n == 1 for *_, n in rows), "a fact was recorded twice"
    assert won == sum(1 for v in range(n_visitors) if v % 5 < 2)


@pytest.mark.postgres
@pytest.mark.redis
def test_a_resend_to_the_other_process_after_kill_9_stores_each_event_once(
    pg_url: str, tmp_path: Path
) -> None:
    """Visitors send their batches to process A, which is killed with SIGKILL under load
    (commits in flight, Redis state not yet saved, visitor locks held). Every batch is then
    resent to process B with a new ``sentAt`` (so every corrected ``ts`` differs): each
    event is stored once, and no batch A acknowledged is accepted again."""
    n_visitors, n_batches, per = 24, 8, 10
    now = int(time.time() * 1000)

    def body(v: int, b: int, sent_at: int) -> str:
        evs = [
            {"id": f"{v}-{b}-{k}", "type": "click", "ts": now - 120_000 + b * 1000 + k}
            for k in range(per)
        ]
        evs[0] = {**evs[0], "type": "page_view", "url": f"https://x.example/{b}"}
        return json.dumps(
            {"siteKey": "demo-site-key", "visitorId": f"k9-{v}", "sentAt": sent_at, "events": evs}
        )

    acked: dict[tuple[int, int], dict] = {}

    with servers(pg_url, tmp_path) as (urls, procs):

        async def load() -> None:
            async with httpx.AsyncClient(timeout=10) as client:

                async def visitor(v: int) -> None:
                    for b in range(n_batches):
                        try:
                            r = await client.post(urls[0] + "/v1/events", content=body(v, b, now))
                        except httpx.HTTPError:
                            return  # A died with this batch in flight
                        if r.status_code != 200:
                            return
                        acked[(v, b)] = r.json()

                async def killer() -> None:
                    while len(acked) < n_visitors * 2:
                        await asyncio.sleep(0.002)
                    procs[0].kill()  # SIGKILL: no shutdown, no state saved

                await asyncio.gather(killer(), *[visitor(v) for v in range(n_visitors)])

        asyncio.run(load())
        procs[0].wait(timeout=10)
        assert 0 < len(acked) < n_visitors * n_batches

        async def resend_all() -> dict[tuple[int, int], dict]:
            answers: dict[tuple[int, int], dict] = {}
            async with httpx.AsyncClient(timeout=30) as client:

                async def visitor(v: int) -> None:
                    for b in range(n_batches):
                        # A lock A held expires after its lifetime: B answers 503 until then.
                        deadline = time.time() + 40
                        while True:
                            r = await client.post(
                                urls[1] + "/v1/events", content=body(v, b, now + 2_000)
                            )
                            if r.status_code == 200 or time.time() > deadline:
                                break
                            assert r.status_code == 503, r.text
                            await asyncio.sleep(0.5)
                        assert r.status_code == 200, r.text
                        answers[(v, b)] = r.json()

                await asyncio.gather(*[visitor(v) for v in range(n_visitors)])
            return answers

        answers = asyncio.run(resend_all())

    for key, answer in answers.items():
        assert answer["accepted"] + answer["duplicates"] == per, (key, answer)
        if key in acked:  # stored and acknowledged by A: nothing of it is new
            assert answer["duplicates"] == per, (key, acked[key], answer)
    eng = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as c:
            twice = c.execute(
                text(
                    "SELECT visitor_id, event_id, count(*) FROM events "
                    "GROUP BY visitor_id, event_id HAVING count(*) > 1"
                )
            ).all()
            total = c.execute(select(func.count()).select_from(events)).scalar_one()
            counted = c.execute(select(func.sum(sessions.c.event_count))).scalar_one()
    finally:
        eng.dispose()
    assert twice == []
    assert total == n_visitors * n_batches * per
    assert counted == total  # and each counted once in its visit
