"""Ingestion throughput and latency of ``POST /v1/events`` over loopback.

One server process pinned to core 0 (``taskset``), this load generator on core 1. Rows:
SQLite with live state in memory, PostgreSQL with live state in memory, and PostgreSQL with
live state in Redis (what several processes share). Batches
of 10 events for a pool of visitors, every event id new. Two phases per database:

1. saturation: many concurrent connections, as fast as the server answers (events/s);
2. half load: a fixed request rate at half the saturated rate (p50/p99 latency).

Before them, the ceiling: a bare ASGI callable that decodes and validates the batch with
the same msgspec wire model (``bench/ceiling.py``), under the same load; the SQLite row is
printed as a share of it. Prints a table and a line for the README's performance table.
Needs PostgreSQL at 127.0.0.1:5432 for the PostgreSQL row (``--skip-postgres`` to leave it out).

    python bench/ingest.py [--seconds 10] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "src" / "opportune" / "sdk" / "opportune.js"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    database_url: str,
    data_dir: Path,
    port: int,
    redis_url: str = "",
    *,
    ceiling: bool = False,
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OPPORTUNE_DATA_DIR": str(data_dir)}
    # The load comes from one IP at thousands of batches a second: measure ingestion, not
    # the rate limits (their cost is measured apart, docs/api.md).
    env |= {"OPPORTUNE_RATE_LIMIT_EVENTS_PER_IP": "0", "OPPORTUNE_RATE_LIMIT_EVENTS_PER_SITE": "0"}
    if database_url:
        env["OPPORTUNE_DATABASE_URL"] = database_url
    if redis_url:
        env["OPPORTUNE_REDIS_URL"] = redis_url
        env["OPPORTUNE_REDIS_PREFIX"] = f"bench-{uuid.uuid4().hex[:8]}:"
    cmd = [sys.executable, "-m", "opportune.cli", "serve", "--port", str(port)]
    if ceiling:  # the bare ASGI + msgspec endpoint (bench/ceiling.py)
        cmd = [sys.executable, str(ROOT / "bench" / "ceiling.py"), "--port", str(port)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "died") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


class Load:
    """A minimal keep-alive HTTP/1.1 client: enough to measure, cheap enough to not be the
    bottleneck (a general-purpose client costs more CPU than the server it measures)."""

    def __init__(self, port: int, visitors: list[str], new_share: float = 0.1) -> None:
        self.port = port
        self.visitors = visitors
        self.new_share = new_share
        self.counter = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.events = 0

    def body(self) -> bytes:
        self.counter += 1
        n = self.counter
        now = int(time.time() * 1000)
        # A visit sends about ten batches: one in ten comes from a visitor never seen before
        # (a database lookup, then a new visitor and session), the rest from known ones.
        if random.random() < self.new_share:
            vid = f"new-{uuid.uuid4().hex[:16]}"
        else:
            vid = random.choice(self.visitors)
        events = [
            {
                "id": f"{n}-{k}",
                "type": "page_view" if k % 3 == 0 else "click",
                "ts": now - 10 + k,
                "url": f"https://127.0.0.1/demo/p{k}",
                "name": "Apply" if k % 3 else None,
            }
            for k in range(10)
        ]
        for e in events:
            if e["name"] is None:
                del e["name"]
        return json.dumps(
            {"siteKey": "demo-site-key", "visitorId": vid, "sentAt": now, "events": events}
        ).encode()

    def request(self, body: bytes) -> bytes:
        return (
            b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            b"User-Agent: "
            + UA.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )

    async def one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = self.body()
        t0 = time.perf_counter()
        writer.write(self.request(body))
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        resp = await reader.readexactly(length)
        self.latencies.append(time.perf_counter() - t0)
        if not head.startswith(b"HTTP/1.1 200"):
            self.errors += 1
            if self.errors < 3:
                print("error:", head[:40], resp[:200], file=sys.stderr)
        else:
            self.events += 10

    async def closed_loop(self, connections: int, seconds: float) -> float:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            while time.perf_counter() < stop:
                await self.one(reader, writer)
            writer.close()

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(connections)])
        return time.perf_counter() - t0

    async def open_loop(self, rate: float, seconds: float, connections: int) -> float:
        """Requests started on a fixed schedule, whatever the answers' speed (no coordinated
        omission: a slow answer does not delay the next request's start)."""
        pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        for _ in range(connections):
            pool.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))
        total = int(rate * seconds)
        start = time.perf_counter()

        async def fire() -> None:
            conn = await pool.get()
            await self.one(*conn)
            pool.put_nowait(conn)

        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire()))
        await asyncio.gather(*tasks)
        return time.perf_counter() - start


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))] * 1000 if s else float("nan")


def run_db(
    name: str,
    url: str,
    seconds: float,
    connections: int,
    redis_url: str = "",
    *,
    ceiling: bool = False,
) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="opp-bench-"))
    port = free_port()
    server = start_server(url, data, port, redis_url, ceiling=ceiling)
    try:
        pool = [f"bench-{uuid.uuid4().hex[:12]}-{i}" for i in range(5000)]
        warm = Load(port, pool, new_share=0)
        asyncio.run(warm.closed_loop(connections, 3))  # every pooled visitor seen once or more
        load = Load(port, pool)
        elapsed = asyncio.run(load.closed_loop(connections, seconds))
        eps = load.events / elapsed
        sat_p99 = pct(load.latencies, 0.99)
        # Let the server finish what the burst left behind (WAL copy) before the steady
        # half-load phase: its latencies are those of a server at that load.
        time.sleep(3)
        half = Load(port, pool)
        asyncio.run(half.open_loop(eps / 20, seconds, connections))
        return {
            "events_s": eps,
            "sat_p99": sat_p99,
            "p50": pct(half.latencies, 0.5),
            "p99": pct(half.latencies, 0.99),
            "errors": load.errors + half.errors,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def pg_database() -> str:
    from sqlalchemy import create_engine, text

    name = f"opportune_bench_{os.getpid()}"
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_pg(url: str) -> None:
    from sqlalchemy import create_engine, text

    name = url.rsplit("/", 1)[1]
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def snippet_gzip() -> int | None:
    if not SDK.exists():
        return None
    return len(gzip.compress(SDK.read_bytes(), 9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--skip-redis", action="store_true", help="leave out PostgreSQL + Redis")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # The ceiling first and the server right after, under the same load and on the same
    # core: their ratio is the figure that travels between machines.
    rows = {"ceiling": run_db("ceiling", "", args.seconds, args.connections, ceiling=True)}
    rows["sqlite"] = run_db("sqlite", "", args.seconds, args.connections)
    if not args.skip_postgres:
        url = pg_database()
        try:
            rows["postgresql"] = run_db("postgresql", url, args.seconds, args.connections)
        finally:
            drop_pg(url)
        if not args.skip_redis:
            url = pg_database()
            try:
                rows["pg+redis"] = run_db(
                    "pg+redis", url, args.seconds, args.connections, "redis://127.0.0.1:6379/13"
                )
            finally:
                drop_pg(url)
    print(
        f"{'database':<11} {'events/s':>9} {'sat p99 ms':>11} {'half-load p50 ms':>17} "
        f"{'half-load p99 ms':>17} {'errors':>7}"
    )
    for name, r in rows.items():
        print(
            f"{name:<11} {r['events_s']:>9.0f} {r['sat_p99']:>11.1f} {r['p50']:>17.2f} "
            f"{r['p99']:>17.2f} {r['errors']:>7.0f}"
        )
    ratio = rows["sqlite"]["events_s"] / rows["ceiling"]["events_s"]
    print(
        f"opportune serve (SQLite, example workspace) / bare ASGI + msgspec: {ratio:.2f} "
        "(aim ≥ 0.5)"
    )
    gz = snippet_gzip()
    print(f"snippet opportune.js: {gz} bytes gzipped" if gz else "snippet: not found")
    cells = "; ".join(
        f"{n} {r['events_s']:.0f} ev/s, p99 {r['p99']:.1f} ms at half load" for n, r in rows.items()
    )
    print(
        f"README | ingest /v1/events (batches of 10, 1 core) | {cells}; "
        f"SQLite at {ratio:.2f} of the bare ASGI + msgspec endpoint (≥ 0.5) |"
    )


if __name__ == "__main__":
    main()
