"""``opportune serve --workers 2`` on PostgreSQL and Redis, as an operator runs it: two
processes on one port take the batches; ``/readyz`` checks the database, Redis and the
schema; ``/metrics`` answers the same sums from either process, and keeps a killed
worker's counts once the supervisor has replaced it; the JSON log has one line per
request with its id and no secret. Without PostgreSQL and Redis, one line says what to set.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select, text

from opportune.store.schema import events

REDIS_URL = "redis://127.0.0.1:6379/13"
PG_ADMIN = os.environ.get(
    "OPPORTUNE_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
API_KEY = "key-Secret-7f3a9c"
DB_PASSWORD = "pw-Secret-51d2"  # trust auth ignores it; it must still never be logged
EMAIL = "secret.person@example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path
    db_url: str
    metrics_dir: Path

    def workers(self) -> set[int]:
        """The worker processes the supervisor runs now (its spawned children)."""
        found = set()
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except FileNotFoundError:
                    continue
                if b"spawn_main" in cmd:
                    found.add(int(pid))
        return found

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.log.read_text().splitlines() if x.startswith("{")]


@pytest.fixture
def database() -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped after it."""
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"opportune_workers_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    host = PG_ADMIN.split("@", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql://postgres:{DB_PASSWORD}@{host}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def served(database: str, tmp_path: Path) -> Iterator[Served]:
    prefix = f"workers-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "OPPORTUNE_DATABASE_URL": database,
        "OPPORTUNE_REDIS_URL": REDIS_URL,
        "OPPORTUNE_REDIS_PREFIX": prefix,
        "OPPORTUNE_DATA_DIR": str(tmp_path / "data"),
        "OPPORTUNE_API_KEY": API_KEY,
        "OPPORTUNE_LOG_FORMAT": "json",
        "OPPORTUNE_METRICS_DIR": str(tmp_path / "metrics"),
        "OPPORTUNE_RETRAIN_INTERVAL_H": "0",
    }
    cmd = [sys.executable, "-m", "opportune.cli", "serve", "--workers", "2", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    s = Served(proc, f"http://127.0.0.1:{port}", log, database, tmp_path / "metrics")
    try:
        wait_ready(s, lambda: len(s.workers()) == 2)
        yield s
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(prefix + "*"):
            r.delete(key)
        r.close()


def wait_ready(s: Served, also: Any = lambda: True, limit_s: float = 150) -> None:
    """Until ``/readyz`` answers 200 and ``also()`` holds (a loaded 2-core machine starts
    the workers slowly); fails with the log if the server exits or never gets there."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            if httpx.get(s.base + "/readyz", timeout=2).status_code == 200 and also():
                return
        except httpx.HTTPError:
            pass
        if s.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"server not ready: {s.log.read_text()[-3000:]}")
        time.sleep(0.3)


def post_batches(base: str, tag: str, visitors: int, batches: int, per: int = 5) -> int:
    """Batches of ``per`` events, each on a connection of its own (so the kernel hands
    them to either worker); the events accepted."""
    now = int(time.time() * 1000)

    def one(job: tuple[int, int]) -> int:
        v, b = job
        body = {
            "siteKey": "demo-site-key",
            "visitorId": f"{tag}-{v}",
            "sentAt": now,
            "events": [
                {
                    "id": f"{b}-{k}",
                    "type": "page_view",
                    "ts": now - 60_000 + b * 100 + k,
                    "url": f"https://bank.example/{b}",
                }
                for k in range(per)
            ],
        }
        r = httpx.post(base + "/v1/events", content=json.dumps(body), timeout=60)
        assert r.status_code == 200, r.text
        return int(r.json()["accepted"])

    # One visitor's batches in order (the snippet sends one at a time), visitors at once.
    def visitor(v: int) -> int:
        return sum(one((v, b)) for b in range(batches))

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(visitor, range(visitors)))


def metric(base: str, name: str, **labels: str) -> float:
    """One sample of a fresh scrape (a new connection: either worker may answer)."""
    r = httpx.get(base + "/metrics", timeout=10)
    assert r.status_code == 200
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.mark.postgres
@pytest.mark.redis
def test_two_workers_share_the_work_the_metrics_and_the_log(served: Served) -> None:
    s = served
    ready = httpx.get(s.base + "/readyz", timeout=5).json()
    assert ready["status"] == "ready"
    assert set(ready["checks"]) == {"database", "migrations", "redis"}

    accepted = post_batches(s.base, "w", visitors=12, batches=4)
    assert accepted == 12 * 4 * 5
    engine = create_engine(s.db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(events)).scalar_one() == accepted
    finally:
        engine.dispose()

    # Either process answers the scrape with the sum of both.
    for _ in range(4):
        assert metric(s.base, "opportune_events_total", result="accepted", reason="") == accepted
        assert metric(s.base, "opportune_event_batches_total", status="200") == 48
        assert metric(s.base, "opportune_event_batch_seconds_count") == 48

    # Live Now's count is the deployment's, read from Redis: every visitor of both
    # processes, once each has flushed its notes (every 0.25 s).
    deadline = time.monotonic() + 30
    while metric(s.base, "opportune_live_visitors") != 12 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(s.base, "opportune_live_visitors") == 12

    # Both processes took batches: the JSON log's request lines name two pids.
    requests = [x for x in s.lines() if x.get("logger") == "opportune.access"]
    posted = [x for x in requests if x["path"] == "/v1/events"]
    assert len(posted) == 48
    assert len({x["pid"] for x in posted}) == 2, "one worker took every batch"
    assert {x["status"] for x in posted} == {200}

    # An admin request with the key, a cookie and an email in the query: the line has the
    # request id the answer carried and the query's names only.
    r = httpx.get(
        s.base + "/v1/customers/lookup",
        params={"email": EMAIL},
        headers={"x-api-key": API_KEY, "cookie": "opp_session=tok-Secret-99"},
        timeout=10,
    )
    rid = r.headers["x-request-id"]
    mine = wait_for_line(s, rid)
    assert mine["path"] == "/v1/customers/lookup" and mine["query"] == ["email"]
    assert mine["status"] == r.status_code and mine["method"] == "GET"
    whole = s.log.read_text()
    for secret in (API_KEY, DB_PASSWORD, EMAIL, "tok-Secret-99"):
        assert secret not in whole

    # kill -9 of a worker: the supervisor starts another; the dead one's counts stay.
    before = s.workers()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_ready(s, lambda: len(s.workers()) == 2 and victim not in s.workers())
    more = post_batches(s.base, "after-kill", visitors=4, batches=2)
    total = accepted + more
    for _ in range(4):
        assert metric(s.base, "opportune_events_total", result="accepted", reason="") == total
    assert any(p.name.startswith("counter_") for p in s.metrics_dir.iterdir())


def wait_for_line(s: Served, request_id: str) -> dict[str, Any]:
    """The request line of ``request_id`` (a process writes it as the answer ends)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in s.lines():
            if line.get("logger") == "opportune.access" and line["request_id"] == request_id:
                return line
        time.sleep(0.2)
    pytest.fail(f"no log line for request {request_id}")


def test_several_workers_without_postgresql_and_redis_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "OPPORTUNE_DATA_DIR": str(tmp_path), "OPPORTUNE_REDIS_URL": ""}
    env.pop("OPPORTUNE_DATABASE_URL", None)
    cmd = [sys.executable, "-m", "opportune.cli", "serve", "--workers", "3"]
    cmd += ["--port", str(free_port())]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: --workers 3 needs PostgreSQL")
    assert "--database-url" in lines[0] and "OPPORTUNE_REDIS_URL" in lines[0]
    assert "--workers 1" in lines[0]
