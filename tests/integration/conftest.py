"""What the fault tests (``test_faults_*.py``) share: a PostgreSQL and a Redis of the test's
own on free ports (so stopping them leaves the shared servers up), ``opportune serve``
processes, visitors sending batches until each is acknowledged, and the check of what the
database holds against what was acknowledged."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from opportune.store.db import make_engine, migrate
from opportune.store.schema import event_ids, events, sessions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"PostgreSQL's {name} not found (looked in /usr/lib/postgresql/*/bin)")
    return path


class OwnPostgres:
    """A PostgreSQL cluster of this test's own (initdb, pg_ctl) on a free loopback port,
    with one migrated database. ``stop``/``start`` are the fault; the data stays.

    Durability as in production except the OS-level flush (``fsync=off``: the machine does
    not crash here, the server does), so a commit acknowledged before a stop is kept.
    """

    def __init__(self) -> None:
        self.port = free_port()
        # initdb refuses to run as root: then the cluster belongs to the postgres user, in a
        # folder it can reach (pytest's tmp_path is private to root).
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = Path(tempfile.mkdtemp(prefix="opportune-pg-"))
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/opportune"
        self.start()
        admin = make_engine(self.url.rsplit("/", 1)[0] + "/postgres")
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("CREATE DATABASE opportune"))
        admin.dispose()
        eng = make_engine(self.url)
        migrate(eng)
        eng.dispose()

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"{cmd[0]} failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=60 -c shared_buffers=32MB"
        )
        log = str(self.root / "server.log")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: sessions cut, a clean shutdown; ``immediate``: as if the server crashed."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        subprocess.run(
            [*self._as, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


class OwnRedis:
    """A redis-server of this test's own on a free loopback port, without persistence: a
    restart loses every key (locks and live state), the harshest case."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = tmp / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server not found")
        cmd = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--logfile", str(self.log)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        pytest.fail(f"redis-server did not start: {self.log.read_text()[-1000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)


class Server:
    """One ``opportune serve`` process on a fixed port: started again after a kill."""

    def __init__(self, name: str, env: dict[str, str], tmp: Path) -> None:
        self.name, self.env, self.tmp = name, env, tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "opportune.cli", "serve", "--port", str(self.port)],
                env={**os.environ, **self.env},
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        return self

    def ready(self, timeout: float = 90) -> Server:
        """Wait for /healthz (a loaded 2-core machine starts a server in seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"{self.name} did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """kill -9: no shutdown, commits in flight, Redis locks left held."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    r = OwnRedis(tmp_path)
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(name, database_url=..., redis_url=...)``: a started, ready server process;
    several start in parallel when not waited for (``ready=False``, then ``.ready()``)."""
    started: list[Server] = []
    prefix = f"fault-{uuid.uuid4().hex[:8]}:"

    def make(
        name: str, *, database_url: str = "", redis_url: str = "", ready: bool = True
    ) -> Server:
        env = {
            "OPPORTUNE_DATA_DIR": str(tmp_path / "data"),
            "OPPORTUNE_API_KEY": "k",
            "OPPORTUNE_REDIS_PREFIX": prefix,
            "OPPORTUNE_DATABASE_URL": database_url,
            "OPPORTUNE_REDIS_URL": redis_url,
        }
        server = Server(name, env, tmp_path).start()
        started.append(server)
        return server.ready() if ready else server

    try:
        yield make
    finally:
        for server in started:
            server.stop()


# --- visitors under load -------------------------------------------------------------


@dataclass
class Attempt:
    visitor: int
    batch: int
    target: str
    started: float
    ended: float
    status: int  # 0: no answer (refused connection, reset, timeout)


@dataclass
class Load:
    """Visitors of the demo site, each sending its batches in order and resending a batch
    (with a new ``sentAt``, so every corrected ``ts`` differs) until it is answered 200:
    to the next target on each attempt, so a resend may go to either process.

    Anything but 200, 503 or no answer is a failure of the test.
    """

    targets: list[str]
    visitors: int = 16
    batches: int = 10
    per: int = 10
    timeout_s: float = 5.0
    deadline_s: float = 120.0  # a restarted process may take long to start on a loaded machine
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    acked: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_ms = int(time.time() * 1000)

    def visitor_id(self, v: int) -> str:
        return f"{self.tag}-{v}"

    def event_ids(self, v: int, b: int) -> list[str]:
        return [f"{v}-{b}-{k}" for k in range(self.per)]

    def body(self, v: int, b: int) -> bytes:
        evs: list[dict[str, Any]] = [
            {"id": eid, "type": "click", "ts": self.base_ms - 60_000 + b * 100 + k}
            for k, eid in enumerate(self.event_ids(v, b))
        ]
        evs[0].update(type="page_view", url=f"https://bank.example/p{b}")
        now = int(time.time() * 1000)
        return json.dumps(
            {
                "siteKey": "demo-site-key",
                "visitorId": self.visitor_id(v),
                "sentAt": now,
                "events": evs,
            }
        ).encode()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.visitors * 2)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            await asyncio.gather(*[self._visitor(client, v) for v in range(self.visitors)])

    async def _visitor(self, client: httpx.AsyncClient, v: int) -> None:
        end = time.monotonic() + self.deadline_s
        for b in range(self.batches):
            n = 0
            while True:
                target = self.targets[(v + n) % len(self.targets)]
                started = time.monotonic()
                try:
                    r = await client.post(target + "/v1/events", content=self.body(v, b))
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0
                self.attempts.append(Attempt(v, b, target, started, time.monotonic(), status))
                if status == 200:
                    self.acked[(v, b)] = r.json()
                    break
                assert status in (0, 503), f"{status}: {r.text}"
                assert time.monotonic() < end, f"visitor {v}'s batch {b} never acknowledged"
                n += 1
                await asyncio.sleep(min(0.05 * 2**n, 0.5))

    async def when_acked(self, n: int) -> float:
        """Wait until ``n`` batches are acknowledged; the monotonic time then."""
        while len(self.acked) < n:
            await asyncio.sleep(0.005)
        return time.monotonic()


@dataclass
class Figures:
    """What a fault cost: acknowledged events absent (lost), events stored more than once
    (twice), and how long from the fault (or the service's return) to the first 200 and to
    every visitor still sending having had one."""

    fault: str
    lost: int
    twice: int
    first_ok_s: float | None
    all_ok_s: float | None
    refused: int  # answers not 200 (503 or none): resent
    outage_s: float | None = None  # from the fault to the service's return

    def line(self) -> str:
        def s(x: float | None) -> str:
            return "-" if x is None else f"{x:.2f} s"

        return (
            f"FAULT {self.fault}: lost {self.lost}, twice {self.twice}, first 200 after "
            f"{s(self.first_ok_s)}, every visitor after {s(self.all_ok_s)}, "
            f"{self.refused} answers not 200"
            + ("" if self.outage_s is None else f" (service back {self.outage_s:.2f} s after)")
        )


def check(
    db_url: str, load: Load, *, fault: str, since: float | None, fault_at: float | None = None
) -> Figures:
    """Every event of every acknowledged batch stored exactly once (an answer's duplicates
    too: they must be there), nothing stored twice, each event counted once in its visit;
    ``since``: when the service came back (monotonic), for the recovery figures; ``fault_at``:
    when the fault began."""
    eng = make_engine(db_url)
    try:
        with eng.connect() as c:
            prefix = load.tag + "-%"
            counts = {
                (vid, eid): n
                for vid, eid, n in c.execute(
                    select(events.c.visitor_id, events.c.event_id, func.count())
                    .where(events.c.visitor_id.like(prefix))
                    .group_by(events.c.visitor_id, events.c.event_id)
                )
            }
            keys = c.execute(
                select(func.count())
                .select_from(event_ids)
                .where(event_ids.c.visitor_id.like(prefix))
            ).scalar_one()
            counted = c.execute(
                select(func.coalesce(func.sum(sessions.c.event_count), 0)).where(
                    sessions.c.visitor_id.like(prefix)
                )
            ).scalar_one()
    finally:
        eng.dispose()
    acked = [(load.visitor_id(v), eid) for (v, b) in load.acked for eid in load.event_ids(v, b)]
    lost = sum(1 for key in acked if counts.get(key, 0) == 0)
    twice = sum(1 for n in counts.values() if n > 1)
    first_ok = all_ok = None
    if since is not None:
        after = [a for a in load.attempts if a.started >= since]
        oks = [a.ended - since for a in after if a.status == 200]
        first_ok = min(oks) if oks else None
        per_visitor: dict[int, float] = {}
        for a in after:
            if a.status == 200:
                per_visitor.setdefault(a.visitor, a.ended - since)
        all_ok = max(per_visitor.values()) if per_visitor else None
    refused = sum(1 for a in load.attempts if a.status != 200)
    outage = None if since is None or fault_at is None else since - fault_at
    figures = Figures(fault, lost, twice, first_ok, all_ok, refused, outage)
    print(figures.line())
    assert lost == 0, figures.line()
    assert twice == 0, figures.line()
    for (v, b), answer in load.acked.items():
        assert answer["accepted"] + answer["duplicates"] == load.per, (v, b, answer)
    stored = sum(counts.values())
    assert keys == stored  # one key per stored event
    assert counted == stored  # each event counted once in its visit
    # Every batch acknowledged, so every event is there: nothing accepted twice either.
    assert len(load.acked) == load.visitors * load.batches
    assert stored == load.visitors * load.batches * load.per
    assert sum(a["accepted"] for a in load.acked.values()) <= stored
    return figures


@pytest.fixture
def visitors() -> type[Load]:
    """The ``Load`` class: ``visitors(targets, visitors=..., batches=...)``."""
    return Load


@pytest.fixture
def stored_once() -> Callable[..., Figures]:
    """``stored_once(db_url, load, fault=..., since=...)``: the check, and the figures."""
    return check
