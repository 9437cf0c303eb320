"""Web chat at scale: many concurrent conversations over WebSocket on one server process.

``opportune serve`` runs as a subprocess pinned to core 0 (``taskset``), this client on
core 1, on a copy of the example workspace with routing agents ``bench-0…`` of large chat
capacity (signed in as users with sessions made straight in the database). Every
conversation is made through the real path: events on the loan form until the chat is
offered, the offer reported accepted and started on ``/v1/actions``, ``start`` on the
visitor's socket (the loan bot answers first), ``escalate``, routed by the router, and
``accept`` on the routed agent's desk socket. Visitors send the widget's heartbeat every
20 s.

Then, for ``--seconds``, each conversation sends a message every ``--every`` seconds (the
first at a random offset; seed fixed) and the client records, per message: the time from
the visitor's send to the agent desk's receipt (delivery) and to the visitor's ``ack``.
The server's CPU comes from ``/proc/<pid>/stat``: all it did in that window (heartbeats,
acks, echoes to the visitor, the agent's copy) over the messages sent, and the same with
the idle cost of the open chats (a window before with heartbeats only) taken away.

    python bench/chat.py                 # 1,000 conversations, SQLite, live state in memory
    python bench/chat.py --quick         # 100 conversations, shorter windows
    python bench/chat.py --pg [--redis]  # PostgreSQL (and Redis for the bus and live state)

Also prints the intent accuracy of the bots' matcher (``bench/intents.py``) and the lines
for the README's performance table.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from chat_clients import HEARTBEAT_S, Desk, Stats, Visitor, visitor_ids  # bench/, beside
from websockets.asyncio.client import connect

from opportune.api.app import EXAMPLE_WORKSPACE

BENCH = Path(__file__).resolve().parent
REDIS_URL = "redis://127.0.0.1:6379/13"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    """The ``p`` quantile of ``values`` (seconds) in milliseconds."""
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))] * 1000 if s else float("nan")


def cpu_ticks(pid: int, part: slice = slice(11, 13)) -> int:
    """User + system CPU of a process (all its threads), in clock ticks (``slice(12, 13)``:
    system only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[part])


def bench_workspace(root: Path, agents: int, capacity: int) -> Path:
    """The example workspace with ``agents`` loan advisers of ``capacity`` chats each; the
    loans queue's pacing counts them at the most chats per agent it allows."""
    ws = root / "workspace"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    path = ws / "engagement.yaml"
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    for d in docs:
        if d and d.get("kind") == "queue" and d.get("name") == "loans":
            d["capacityPerAgent"] = 20
    path.write_text(yaml.safe_dump_all(docs, allow_unicode=True, sort_keys=False))
    people = [
        {
            "kind": "agent",
            "name": f"bench-{i}",
            "displayName": f"Bench Adviser {i}",
            "skills": {"loans": 5},
            "languages": ["en", "es"],
            "capacity": {"chat": capacity},
        }
        for i in range(agents)
    ]
    (ws / "bench-agents.yaml").write_text(yaml.safe_dump_all(people, sort_keys=False))
    return ws


def start_server(
    ws: Path, data: Path, port: int, *, db_url: str, redis_prefix: str, pin: bool
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPPORTUNE_")}
    if db_url:
        env["OPPORTUNE_DATABASE_URL"] = db_url
    if redis_prefix:
        env["OPPORTUNE_REDIS_URL"] = REDIS_URL
        env["OPPORTUNE_REDIS_PREFIX"] = redis_prefix
    cmd = [sys.executable, "-m", "opportune.cli", "serve", "--workspace", str(ws)]
    cmd += ["--data-dir", str(data), "--port", str(port), "--api-key", "bench"]
    if pin and shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]  # taskset execs: the pid is the server's
    log = (data.parent / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120  # a loaded 2-core machine starts slowly
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError((data.parent / "server.log").read_text()[-3000:])


def sign_in_agents(db_url: str, agents: int) -> list[str]:
    """A user and a live session per agent, straight in the store; their cookie tokens."""
    from opportune.store import users
    from opportune.store.db import make_engine

    eng = make_engine(db_url)
    now = int(time.time() * 1000)
    tokens = []
    with eng.begin() as conn:
        for i in range(agents):
            user = users.create_user(
                conn,
                email=f"bench-{i}@bank.example",
                name=f"Bench Adviser {i}",
                role="agent",
                password="correct horse battery",
                now_ms=now,
                agent_id=f"bench-{i}",
            )
            tokens.append(users.start_session(conn, user, now_ms=now)[0])
    eng.dispose()
    return tokens


@dataclass
class Run:
    """One measured run's settings."""

    conversations: int
    agents: int
    every: float
    seconds: float
    idle_seconds: float
    concurrency: int
    seed: int


async def open_all(visitors: list[Visitor], concurrency: int, stats: Stats) -> list[Visitor]:
    """Open every conversation, ``concurrency`` at a time; the ones that made it."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def one(v: Visitor) -> Visitor | None:
            async with gate:
                try:
                    await v.open(http)
                    return v
                except Exception as exc:  # counted and shown; the run goes on
                    stats.errors.append(f"open {v.n}: {type(exc).__name__}: {exc}")
                    return None

        done = await asyncio.gather(*(one(v) for v in visitors))
    return [v for v in done if v is not None]


async def connect_desks(base: str, tokens: list[str], stats: Stats) -> list[Desk]:
    ws_url = base.replace("http", "ws", 1) + "/agent/ws"
    desks = []
    for token in tokens:
        ws = await connect(
            ws_url,
            origin=base,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"opportune_session={token}"},
            ping_interval=None,
            max_queue=None,
        )
        desk = Desk(ws, stats)
        desk.task = asyncio.create_task(desk.run())  # type: ignore[attr-defined]
        desks.append(desk)
        # One after another: on PostgreSQL two agents made available at once can both
        # insert the queue's staffing row (store.interactions.set_queue_presence).
        await asyncio.wait_for(desk.ready.wait(), 30)
    return desks


async def drive(base: str, pid: int, tokens: list[str], run: Run) -> dict[str, Any]:
    """Open the conversations, let them idle, then the steady message phase; the figures."""
    rng = random.Random(run.seed)
    random.seed(run.seed)  # the heartbeats' offsets
    stats = Stats()
    desks = await connect_desks(base, tokens, stats)
    visitors = [
        Visitor(i, vid, base, stats)
        for i, vid in enumerate(visitor_ids(run.conversations, run.seed))
    ]
    t0 = time.perf_counter()
    live = await open_all(visitors, run.concurrency, stats)
    opened_s = time.perf_counter() - t0
    print(f"opened {len(live)} conversations in {opened_s:.1f} s", file=sys.stderr)
    # Idle: the open chats' own cost (heartbeats, the server's housekeeping).
    c0, w0 = cpu_ticks(pid), time.perf_counter()
    await asyncio.sleep(run.idle_seconds)
    idle_cpu_per_s = (cpu_ticks(pid) - c0) / TICK / (time.perf_counter() - w0)
    load_before = os.getloadavg()
    c1, r1, start = cpu_ticks(pid), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    k1 = cpu_ticks(pid, slice(12, 13))
    until = start + run.seconds
    await asyncio.gather(*(v.talk(start, rng.random() * run.every, run.every, until) for v in live))
    window = time.perf_counter() - start
    cpu = (cpu_ticks(pid) - c1) / TICK
    kernel = (cpu_ticks(pid, slice(12, 13)) - k1) / TICK
    r2 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (r2.ru_utime + r2.ru_stime) - (r1.ru_utime + r1.ru_stime)
    for _ in range(100):  # the last messages' deliveries
        if len(stats.delivered) >= len(stats.sent) and len(stats.acked) >= len(stats.sent):
            break
        await asyncio.sleep(0.1)
    for v in live:
        await v.aclose()
    for d in desks:
        d.task.cancel()  # type: ignore[attr-defined]
        await d.ws.close()
    sent = len(stats.sent)
    return {
        "stats": stats,
        "opened": len(live),
        "opened_s": opened_s,
        "sent": sent,
        "rate": sent / window,
        "cpu_us": cpu / sent * 1e6 if sent else float("nan"),
        "kernel_share": kernel / cpu if cpu else float("nan"),
        "marginal_us": (cpu - idle_cpu_per_s * window) / sent * 1e6 if sent else float("nan"),
        "idle_core": idle_cpu_per_s,
        "busy_core": cpu / window,
        "client_core": client_cpu / window,
        "load": (load_before, os.getloadavg()),
    }


def stored_once(db_url: str) -> tuple[int, int]:
    """(bench messages stored, distinct ids among them): a resend stored twice would show."""
    from sqlalchemy import func, select

    from opportune.store.db import make_engine
    from opportune.store.schema import conversation_messages as m

    eng = make_engine(db_url)
    with eng.connect() as conn:
        bench = m.c.client_id.like("m-%")
        n = conn.execute(select(func.count()).where(bench)).scalar_one()
        distinct = conn.execute(
            select(func.count(func.distinct(m.c.conversation_id + ":" + m.c.client_id))).where(
                bench
            )
        ).scalar_one()
    eng.dispose()
    return int(n), int(distinct)


def pg_database() -> str:
    from sqlalchemy import create_engine, text

    name = f"opportune_bench_chat_{os.getpid()}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_pg(url: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def forget_redis(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(prefix + "*"):
        r.delete(key)
    r.close()


def measure(run: Run, *, pg: bool, use_redis: bool, pin: bool) -> dict[str, Any]:
    """A server on a fresh database, the clients against it; the figures."""
    tmp = Path(tempfile.mkdtemp(prefix="opp-bench-chat-"))
    capacity = -(-run.conversations // run.agents) + 10  # a little room over an even share
    ws = bench_workspace(tmp, run.agents, capacity)
    db_url = pg_database() if pg else ""
    prefix = f"bench-chat-{uuid.uuid4().hex[:8]}:" if use_redis else ""
    port = free_port()
    server = None
    try:
        server = start_server(ws, tmp / "data", port, db_url=db_url, redis_prefix=prefix, pin=pin)
        store_url = db_url or f"sqlite:///{tmp / 'data' / 'opportune.db'}"
        tokens = sign_in_agents(store_url, run.agents)
        out = asyncio.run(drive(f"http://127.0.0.1:{port}", server.pid, tokens, run))
        out["stored"] = stored_once(store_url)
        return out
    except BaseException:
        print((tmp / "server.log").read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
        if db_url:
            drop_pg(db_url)
        if prefix:
            forget_redis(prefix)
        shutil.rmtree(tmp, ignore_errors=True)


def intents_report(heldout: Path | None) -> Any:
    """``bench/intents.py``'s ``evaluate()`` on the demo flows' held-out utterances."""
    spec = importlib.util.spec_from_file_location("bench_intents", BENCH / "intents.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_intents"] = mod
    spec.loader.exec_module(mod)
    return mod.evaluate(heldout=mod.load_heldout(heldout) if heldout else None)


def report(run: Run, out: dict[str, Any], label: str) -> None:
    s: Stats = out["stats"]
    lat, acks = list(s.delivered.values()), list(s.acked.values())
    (l1, l5, _), (e1, e5, _) = out["load"]
    whole = s.phases["whole: first event -> active"]
    print(
        f"conversations opened: {out['opened']}/{run.conversations} in {out['opened_s']:.1f} s "
        f"({out['opened'] / out['opened_s']:.1f}/s, {run.concurrency} at a time); per step:"
    )
    for phase, xs in s.phases.items():
        print(f"  {phase:<38} p50 {pct(xs, 0.5):8.1f} ms  p99 {pct(xs, 0.99):8.1f} ms")
    print(
        f"steady phase: {out['sent']} messages in {run.seconds:.0f} s = {out['rate']:.1f} msg/s "
        f"(one per conversation every {run.every:g} s), heartbeats every {HEARTBEAT_S:g} s"
    )
    print(
        f"  delivery visitor -> agent: p50 {pct(lat, 0.5):.1f} ms, p90 {pct(lat, 0.9):.1f} ms, "
        f"p99 {pct(lat, 0.99):.1f} ms, max {pct(lat, 1.0):.1f} ms"
    )
    print(f"  ack (visitor send -> ack): p50 {pct(acks, 0.5):.1f} ms, p99 {pct(acks, 0.99):.1f} ms")
    print(
        f"  delivered {len(s.delivered)}/{out['sent']}, acked {len(s.acked)}/{out['sent']}, "
        f"delivered twice {s.doubles}; stored {out['stored'][0]} "
        f"({out['stored'][1]} distinct ids)"
    )
    print(
        f"  server CPU: {out['cpu_us']:.0f} µs per message all included "
        f"({out['busy_core']:.0%} of a core, {out['kernel_share']:.0%} of it in the kernel); "
        f"{out['marginal_us']:.0f} µs above the idle "
        f"cost of the open chats ({out['idle_core']:.1%} of a core idle); "
        f"this client {out['client_core']:.0%} of a core"
    )
    print(
        f"  load average {l1:.2f} / {l5:.2f} (1/5 min) at the start of the phase, "
        f"{e1:.2f} / {e5:.2f} at its end; {os.cpu_count()} cores shared"
    )
    twice = sum(1 for n in s.offers.values() if n > 1)
    print(
        f"  offers (alerts) to desks: {sum(s.offers.values())} for {len(s.offers)} chats; "
        f"{twice} chats alerted more than once"
    )
    errors = sorted(s.errors, key=lambda e: e.startswith("desk:"))  # the rarer kinds first
    for e in errors[:5]:
        print(f"  error: {e[:300]}")
    if len(s.errors) > 5:
        print(f"  … {len(s.errors) - 5} more errors")
    print(
        f"README | chat: {out['opened']:,} concurrent conversations over WebSocket, one process, "
        f"{label} | delivery p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms "
        f"(aim p99 ≤ 50 ms); ack p99 {pct(acks, 0.99):.1f} ms; {out['cpu_us']:.0f} µs server CPU "
        f"per message at {out['rate']:.0f} msg/s; load {l1:.1f}–{e1:.1f} on 2 shared cores "
        f"| `python bench/chat.py` |"
    )
    print(
        f"README | chat: opening a conversation through the offer path (3 events, 2 reports, "
        f"start, bot, escalate, route, accept) | {out['opened'] / out['opened_s']:.1f} per s "
        f"{run.concurrency} at a time; p50 {pct(whole, 0.5):.0f} ms, p99 {pct(whole, 0.99):.0f} "
        f"ms each "
        f"| `python bench/chat.py` |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 conversations, short windows")
    ap.add_argument("--conversations", type=int, default=1000)
    ap.add_argument("--agents", type=int, default=10, help="desk sockets (agents)")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between messages")
    ap.add_argument("--seconds", type=float, default=60.0, help="the steady phase")
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--concurrency", type=int, default=10, help="conversations opened at once")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    ap.add_argument("--redis", action="store_true", help="Redis for the bus and live state")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    ap.add_argument("--skip-intents", action="store_true")
    ap.add_argument("--heldout", type=Path, help="held-out utterances (bench/data/…)")
    args = ap.parse_args()
    if args.quick:
        args.conversations, args.seconds, args.idle_seconds = 100, 20.0, 5.0
    pin = not args.no_pin and (os.cpu_count() or 1) > 1
    if pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    run = Run(
        args.conversations,
        args.agents,
        args.every,
        args.seconds,
        args.idle_seconds,
        args.concurrency,
        args.seed,
    )
    label = ("PostgreSQL" if args.pg else "SQLite") + (", Redis" if args.redis else "")
    out = measure(run, pg=args.pg, use_redis=args.redis, pin=pin)
    report(run, out, label)
    if not args.skip_intents:
        intents = intents_report(args.heldout)
        for lang, sc in sorted(intents.languages.items()):
            print(
                f"intents {lang}: accuracy {sc.accuracy:.1%} ({sc.correct}/{sc.n}), macro F1 "
                f"{sc.macro_f1:.2f}, under the threshold {sc.fallback_rate:.1%}"
            )
        print("README " + intents.line().removesuffix(" |") + " | `python bench/chat.py` |")


if __name__ == "__main__":
    main()
