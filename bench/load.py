"""Held load: the highest rate of snippet traffic 1 and 2 processes answer with p99 ≤ 100 ms.

Simulated visitors speak the snippet's protocol (docs/snippet.md, ``sdk/opportune.js``):
one visitor's events in batches to ``POST /v1/events`` — a page view with its first scroll
and viewport events, then clicks, deeper scrolls, searches, form errors, idle, a submitted
application with ``identify`` — with at most one batch of a visitor in flight; an answer's
``recheckInMs`` brings ``POST /v1/recheck`` that much later (the snippet rechecks only when
asked); an offer in an answer is reported to ``POST /v1/actions`` as the widget does —
``offered`` when shown, then ``accepted`` (a content CTA, a third of the time) or
``rejected``; a bot's window ``offered`` + ``started``, then ``abandoned``. Alongside, chats
open at a fixed rate through the real path (``bench/chat_clients.py``: events until the loan
chat is offered, the reports, the socket, the bot, escalate, routing, the desk's accept),
talk for a while, end, and are wrapped up by the desk, so the number of open chats stays
steady.

Open loop: each batch is started at its scheduled time whatever the answers' speed, and its
latency is measured from that time (no coordinated omission; a client that falls behind
shows as latency, and the lag is printed). The search per configuration: steps of
``--seconds`` at a rate doubling from ``--start-rate`` until a step fails (p99 of
``/v1/events`` over ``--p99-ms``, 100 ms, or any batch not answered 200) — or halving
while it fails — then ``--bisect`` steps halving the gap. A failed step is tried once more
(``--retries``): on a shared machine one stall of everything fails a step. The held load
is the highest rate that passed. Every answer is checked off: events sent, answered
(accepted, duplicates, refused) and, at the end, stored in the database (``event_ids``).

Servers: ``opportune serve`` (1 process) and ``opportune serve --workers 2`` on a fresh
PostgreSQL database (127.0.0.1:5432, dropped after) and a unique Redis prefix
(127.0.0.1:6379). ``--workers`` because it is the documented way to run N processes (one
port, the kernel hands each new connection to a worker; the client opens a pool of
connections and spreads nothing itself) — the per-worker CPU is printed to show the spread.
Nothing is pinned: on a 2-core machine the servers, PostgreSQL, Redis and this client share
both cores, so the 1→2 factor is a lower bound of what 2 dedicated cores give.

    python bench/load.py                      # 1 then 2 processes
    python bench/load.py --quick              # under 2 minutes, for development
    python bench/load.py --processes 2 --seconds 15 --max-rate 4000 --chats-per-second 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))  # chat.py and chat_clients.py, beside

import chat  # noqa: E402  (bench/chat.py: workspace, agents' sessions, desks)
from chat_clients import CHAT_MAP, Desk, Stats, Visitor  # noqa: E402

from opportune.core.actionmaps import in_holdout  # noqa: E402

SITE_KEY = "demo-site-key"
P99_LIMIT_MS = 100.0
KEEP_ALIVE_S = 4.0  # under uvicorn's keep-alive timeout (5 s), as browsers stay under servers'
WEBKIT = "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"
UAS = [  # desktop and mobile: device, browser and OS are parsed at each visit's start
    f"Mozilla/5.0 (X11; Linux x86_64) {WEBKIT} Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    f"Mozilla/5.0 (Linux; Android 14; Pixel 7) {WEBKIT} Mobile Safari/537.36",
]
SEARCHES = ["device activation", "travel notice", "loan rates", "opening hours", "abroad"]


# ---- the wire ---------------------------------------------------------------------------


class Http:
    """A minimal keep-alive HTTP/1.1 client over a pool of connections to one port: cheap
    enough that the client is not what is measured. A request with no idle connection opens
    a new one (as browsers do), so waiting for a connection never hides a slow answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        # Oldest idle first: every connection gets used, so with ``--workers`` the requests
        # spread over the workers as the kernel spread the connections.
        self.idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = deque()
        self.opened = 0

    async def post(self, path: str, body: bytes, ua: str) -> tuple[int, bytes]:
        """The status and body of the answer; status 0 for a broken connection."""
        now = time.perf_counter()
        while self.idle and now - self.idle[0][2] > KEEP_ALIVE_S:
            self.idle.popleft()[1].close()  # the server may be closing it: not worth a race
        if self.idle:
            reader, writer, _ = self.idle.popleft()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.opened += 1
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Origin: http://127.0.0.1:{self.port}\r\nUser-Agent: {ua}\r\n"
            f"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            writer.write(head.encode() + body)
            raw = await reader.readuntil(b"\r\n\r\n")
            length, close = 0, False
            for line in raw.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            data = await reader.readexactly(length)
            status = int(raw[9:12])
        except (OSError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            return 0, b""
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer, time.perf_counter()))
        return status, data

    def close(self) -> None:
        for _, w, _ in self.idle:
            w.close()
        self.idle.clear()


# ---- simulated visitors -----------------------------------------------------------------


def journey(rng: random.Random, base: str) -> list[list[dict[str, Any]]]:
    """One visit as the batches the snippet would send: per page, what the first second
    gathers (page view, first scroll, an element in view), then what comes later."""
    pages = ["product", "search", "apply", "help", "account", "product", "search"]
    visit = ["index", *rng.sample(pages, rng.randint(1, 4))]
    batches: list[list[dict[str, Any]]] = []
    for n, page in enumerate(visit):
        url = f"{base}/demo/{page}.html"
        first: list[dict[str, Any]] = []
        pv: dict[str, Any] = {"type": "page_view", "url": url, "title": page.title()}
        if n == 0:
            if rng.random() < 0.3:
                pv["url"] = url + "?utm_source=news&utm_medium=cpc"
            pv["referrer"] = "https://www.google.com/"
        if page == "search":
            q = rng.choice(SEARCHES)
            pv["url"] = f"{base}/demo/search.html?q={q.replace(' ', '+')}"
            first += [pv, {"type": "search", "url": pv["url"], "query": q}]
        else:
            first.append(pv)
        if rng.random() < 0.7:
            first.append({"type": "scroll", "url": url, "name": "25%", "attributes": {"depth": 25}})
        if rng.random() < 0.4:
            first.append({"type": "viewport", "url": url, "name": f"{page}-hero"})
        batches.append(first)
        later: list[dict[str, Any]] = []
        for depth in (50, 75, 100)[: rng.randint(0, 3)]:
            later.append(
                {"type": "scroll", "url": url, "name": f"{depth}%", "attributes": {"depth": depth}}
            )
        for _ in range(rng.randint(0, 3)):
            later.append(
                {
                    "type": "click",
                    "url": url,
                    "name": rng.choice(["Apply now", "Rates", "Help"]),
                    "attributes": {"href": f"{base}/demo/apply.html"},
                }
            )
        if page == "apply":
            # One error at most: two would make a loan-form struggler, offered the chat,
            # whose pending offers pacing would count against the chats driven alongside.
            if rng.random() < 0.4:
                later.append(
                    {
                        "type": "form_error",
                        "url": url,
                        "name": "loan",
                        "attributes": {"field": "income", "reason": "valueMissing"},
                    }
                )
            if rng.random() < 0.3:
                later.append(
                    {
                        "type": "form_submitted",
                        "url": url,
                        "name": "loan",
                        "attributes": {"fields": "amount,income,email"},
                    }
                )
                later.append(
                    {
                        "type": "custom",
                        "url": url,
                        "name": "loan_submitted",
                        "attributes": {"amount": rng.choice([3000, 5000, 12000])},
                    }
                )
                if rng.random() < 0.5:
                    email = f"v{rng.getrandbits(40):x}@bank.example"
                    later.append(
                        {
                            "type": "identify",
                            "identity": {"email": email},
                            "traits": {"plan": "gold"},
                        }
                    )
        if page == "help" and rng.random() < 0.5:
            later.append({"type": "idle", "url": url, "attributes": {"seconds": 30}})
        if later:
            batches.append(later[:10])
    return batches


class SimVisitor:
    """One browser: its id, its visit's batches still to send, the offer it shows."""

    __slots__ = ("batches", "gone", "id", "recheck", "showing", "ua")

    def __init__(self, rng: random.Random, base: str) -> None:
        self.id = uuid.UUID(int=rng.getrandbits(128)).hex
        self.ua = rng.choice(UAS)
        self.batches = deque(journey(rng, base))
        self.showing: str | None = None
        self.recheck: asyncio.TimerHandle | None = None
        self.gone = False


@dataclass
class Step:
    """One step of the search: what was offered, and what the answers said."""

    rate: float
    seconds: float
    limit_ms: float = P99_LIMIT_MS
    started: float = 0.0
    ended: float = 0.0
    batches_sent: int = 0
    events_sent: int = 0
    answers: Counter[int] = field(default_factory=Counter)  # status -> batches
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    latencies: list[float] = field(default_factory=list)  # from the scheduled start, s
    lags: list[float] = field(default_factory=list)  # start - scheduled, s
    rechecks: Counter[int] = field(default_factory=Counter)
    recheck_latencies: list[float] = field(default_factory=list)
    offers: Counter[str] = field(default_factory=Counter)  # action type -> shown
    reports: Counter[str] = field(default_factory=Counter)  # state -> sent
    reports_refused: int = 0
    report_errors: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    worker_cpu_s: list[float] = field(default_factory=list)
    chat_delivery: list[float] = field(default_factory=list)
    chat_messages: int = 0
    chat_opened: int = 0
    chat_errors: int = 0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def answered_events(self) -> int:
        return self.accepted + self.duplicates + self.refused

    @property
    def errors(self) -> int:
        """Batches not answered 200 (refused wholesale, 5xx, connection broken)."""
        return sum(n for status, n in self.answers.items() if status != 200)

    @property
    def events_s(self) -> float:
        """Events answered per second of the step."""
        return self.answered_events / self.seconds

    @property
    def p50(self) -> float:
        return pct(self.latencies, 0.5)

    @property
    def p99(self) -> float:
        return pct(self.latencies, 0.99)

    @property
    def held(self) -> bool:
        return bool(self.latencies) and self.p99 <= self.limit_ms and self.errors == 0


def pct(values: list[float], p: float) -> float:
    """The ``p`` quantile of ``values`` (seconds) in milliseconds."""
    return chat.pct(values, p)


class Traffic:
    """The visitors of one configuration, across its steps: who sends next, and what the
    client does with each answer (rechecks, reports)."""

    def __init__(self, http: Http, base: str, seed: int) -> None:
        self.http, self.base = http, base
        self.rng = random.Random(seed)
        self.ready: deque[SimVisitor] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.step: Step | None = None
        lengths = [len(journey(self.rng, base)) for _ in range(500)]
        self.new_share = len(lengths) / sum(lengths)  # arrivals keep the population steady
        self.ids = 0

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def next_visitor(self) -> SimVisitor:
        if self.ready and self.rng.random() >= self.new_share:
            return self.ready.popleft()
        return SimVisitor(self.rng, self.base)

    def body(self, v: SimVisitor, extra: dict[str, Any]) -> bytes:
        now = int(time.time() * 1000)
        return json.dumps(
            {"siteKey": SITE_KEY, "visitorId": v.id, "sentAt": now, **extra},
            separators=(",", ":"),
        ).encode()

    async def run(self, step: Step) -> None:
        """Batches started on schedule for ``step.seconds``; returns once all are answered."""
        self.step = step
        step.started = due = time.perf_counter()
        end = due + step.seconds
        batches: list[asyncio.Task[None]] = []
        while due < end:
            v = self.next_visitor()
            batch = v.batches.popleft()
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            batches.append(asyncio.create_task(self.send(v, batch, due, step)))
            due += len(batch) / step.rate  # the schedule is in events: the offered rate
        step.ended = end
        await asyncio.gather(*batches)

    async def send(
        self, v: SimVisitor, batch: list[dict[str, Any]], due: float, step: Step
    ) -> None:
        step.lags.append(time.perf_counter() - due)
        now = int(time.time() * 1000)
        events = [
            {"id": uuid.uuid4().hex, "ts": now - 5 * (len(batch) - k), **e}
            for k, e in enumerate(batch)
        ]
        context = {
            "locale": "en-GB",
            "timezone": "Europe/London",
            "screenWidth": 1280,
            "screenHeight": 800,
        }
        step.batches_sent += 1
        step.events_sent += len(events)
        status, data = await self.http.post(
            "/v1/events", self.body(v, {"context": context, "events": events}), v.ua
        )
        step.latencies.append(time.perf_counter() - due)
        step.answers[status] += 1
        if status == 200:
            a = json.loads(data)
            step.accepted += a["accepted"]
            step.duplicates += a["duplicates"]
            step.refused += len(a["refused"])
            self.answer(v, a)
        if v.batches:
            self.ready.append(v)
        else:
            self.leave(v)

    def leave(self, v: SimVisitor) -> None:
        v.gone = True
        if v.recheck is not None:
            v.recheck.cancel()

    def answer(self, v: SimVisitor, a: dict[str, Any]) -> None:
        """What the snippet does with an answer: show an offer, schedule a recheck."""
        acts = [x for x in a.get("actions", ()) if x.get("type") in ("content", "chat", "bot")]
        if acts and v.showing is None:
            self.spawn(self.show(v, acts[0]))  # one offer at a time; the others unshown
        if "recheckInMs" in a and not v.gone:
            if v.recheck is not None:
                v.recheck.cancel()
            ms = max(int(a["recheckInMs"]), 1000)
            loop = asyncio.get_running_loop()
            v.recheck = loop.call_later(ms / 1000, lambda: self.spawn(self.recheck(v)))

    async def recheck(self, v: SimVisitor) -> None:
        v.recheck = None
        if v.gone or self.step is None:
            return
        step, t0 = self.step, time.perf_counter()
        status, data = await self.http.post("/v1/recheck", self.body(v, {}), v.ua)
        step.rechecks[status] += 1
        step.recheck_latencies.append(time.perf_counter() - t0)
        if status == 200:
            self.answer(v, json.loads(data))

    async def show(self, v: SimVisitor, act: dict[str, Any]) -> None:
        """The widget: ``offered`` on screen, then what the visitor did a moment later."""
        assert self.step is not None
        iid, kind = str(act["id"]), act["type"]
        v.showing = iid
        self.step.offers[kind] += 1
        first = ["offered", "started"] if kind == "bot" else ["offered"]
        await self.report(v, iid, first)
        await asyncio.sleep(1 + self.rng.random() * 2)
        if kind == "bot":
            last = "abandoned"
        elif kind == "content" and self.rng.random() < 1 / 3:
            last = "accepted"
        else:
            last = "rejected"  # a chat offered here is declined: chats are driven apart
        await self.report(v, iid, [last])
        v.showing = None

    async def report(self, v: SimVisitor, iid: str, states: list[str]) -> None:
        assert self.step is not None
        step = self.step
        now = int(time.time() * 1000)
        reports = [{"id": iid, "state": s, "ts": now} for s in states]
        status, data = await self.http.post("/v1/actions", self.body(v, {"reports": reports}), v.ua)
        for s in states:
            step.reports[s] += 1
        if status != 200:
            step.report_errors += 1
        else:
            step.reports_refused += len(json.loads(data).get("refused", ()))

    async def drain(self) -> None:
        """Every visitor leaves; what is still in flight finishes."""
        for v in self.ready:
            self.leave(v)
        self.ready.clear()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=30)


# ---- chats alongside --------------------------------------------------------------------


class Chats:
    """Chats opened at a fixed rate through the real path; each talks ``talk_s`` (a message
    every ``every`` s), ends, and is wrapped up by its agent's desk."""

    def __init__(
        self, base: str, tokens: list[str], rate: float, talk_s: float, every: float, seed: int
    ) -> None:
        self.base, self.tokens, self.rate = base, tokens, rate
        self.talk_s, self.every = talk_s, every
        self.stats = Stats()
        self.desks: list[Desk] = []
        self.opened: list[float] = []  # perf_counter times a chat became active
        self.failed = 0
        self.seed = seed
        self.stop = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.desks = await connect_desks(self.base, self.tokens, self.stats)
        self.runner = asyncio.create_task(self.run())

    def vids(self) -> Any:
        i = 0
        while True:
            vid = f"chat-{self.seed}-{i}"
            if not in_holdout(vid, CHAT_MAP, 0.1):
                yield vid
            i += 1

    async def run(self) -> None:
        if self.rate <= 0:
            return
        loop = asyncio.get_running_loop()
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            due, ids = loop.time(), self.vids()
            for n in range(10**9):
                if self.stop.is_set():
                    break
                v = Visitor(n, next(ids), self.base, self.stats)
                t = asyncio.create_task(self.one(v, http))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)
                due += 1 / self.rate
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), max(due - loop.time(), 0))
            if self.tasks:
                await asyncio.wait(list(self.tasks), timeout=60)

    async def one(self, v: Visitor, http: httpx.AsyncClient) -> None:
        try:
            await v.open(http)
            self.opened.append(time.perf_counter())
            start = time.perf_counter()
            await v.talk(start, random.random() * self.every, self.every, start + self.talk_s)
            await v.end()
        except Exception as exc:  # counted and shown; the run goes on
            self.failed += 1
            said = exc.response.text[:200] if isinstance(exc, httpx.HTTPStatusError) else ""
            self.stats.errors.append(f"chat {v.n}: {type(exc).__name__}: {exc} {said}"[:500])
        finally:
            await v.aclose()

    def window(self, t0: float, t1: float) -> tuple[list[float], int, int]:
        """Delivery latencies of messages sent within [t0, t1) (``perf_counter``), how
        many were sent then, and how many chats became active then."""
        s = self.stats
        lat = [s.delivered[m] for m, at in s.sent.items() if t0 <= at < t1 and m in s.delivered]
        sent = sum(1 for at in s.sent.values() if t0 <= at < t1)
        opened = sum(1 for at in self.opened if t0 <= at < t1)
        return lat, sent, opened

    async def close(self) -> None:
        self.stop.set()
        await self.runner
        for d in self.desks:
            d.task.cancel()  # type: ignore[attr-defined]
            await d.ws.close()


async def connect_desks(base: str, tokens: list[str], stats: Stats) -> list[Desk]:
    """``bench/chat.py``'s desks, wrapping each ended chat up (its slot frees)."""
    from websockets.asyncio.client import connect

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
        desk = Desk(ws, stats, wrap_code="other")
        desk.task = asyncio.create_task(desk.run())  # type: ignore[attr-defined]
        desks.append(desk)
        await asyncio.wait_for(desk.ready.wait(), 30)  # one at a time, as chat.py says why
    return desks


# ---- servers ----------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid``'s child processes, their children, and so on (from /proc)."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU of a live process, in seconds (0 once it is gone)."""
    try:
        return chat.cpu_ticks(pid) / chat.TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def workers_of(pid: int) -> list[int]:
    """The server processes answering requests: the workers under ``--workers``' supervisor
    (its multiprocessing children, not the resource tracker), or the process itself."""
    found = []
    for kid in descendants(pid):
        try:
            cmd = Path(f"/proc/{kid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            found.append(kid)
    return found or [pid]


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_server(
    ws: Path, data: Path, port: int, *, db_url: str, redis_prefix: str, processes: int
) -> subprocess.Popen[bytes]:
    """``opportune serve`` (``--workers N`` for N > 1) on PostgreSQL + Redis; returns once
    every worker is up and ``/readyz`` says ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPPORTUNE_")}
    env |= {
        "OPPORTUNE_DATABASE_URL": db_url,
        "OPPORTUNE_REDIS_URL": chat.REDIS_URL,
        "OPPORTUNE_REDIS_PREFIX": redis_prefix,
    }
    cmd = [sys.executable, "-m", "opportune.cli", "serve", "--workspace", str(ws)]
    cmd += ["--data-dir", str(data), "--port", str(port), "--api-key", "bench"]
    if processes > 1:
        cmd += ["--workers", str(processes)]
    with (data.parent / "server.log").open("wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 180  # a loaded 2-core machine starts slowly
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready and (processes == 1 or len(workers_of(proc.pid)) >= processes):
            time.sleep(1 if processes == 1 else 3)  # the last worker's first moments
            return proc
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError((data.parent / "server.log").read_text()[-3000:])


def pg_database() -> str:
    """A fresh, uniquely named PostgreSQL database; drop it with ``chat.drop_pg``."""
    from sqlalchemy import create_engine, text

    name = f"opportune_bench_load_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(chat.PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def stored_events(db_url: str) -> int:
    """Events of the simulated visitors the database holds (by ``event_ids``, exactly once;
    the chats' visitors, ``chat-…``, left out)."""
    from sqlalchemy import func, select

    from opportune.store.db import make_engine
    from opportune.store.schema import event_ids

    eng = make_engine(db_url)
    with eng.connect() as conn:
        q = select(func.count()).where(~event_ids.c.visitor_id.like("chat-%"))
        n = conn.execute(q).scalar_one()
    eng.dispose()
    return int(n)


# ---- one configuration: a server, the search ------------------------------------------


@dataclass
class Options:
    """One run's settings (the command line's)."""

    seconds: float = 12.0
    p99_ms: float = P99_LIMIT_MS
    start_rate: float = 100.0
    max_rate: float = 6400.0
    bisect: int = 2
    halvings: int = 3
    retries: int = 1
    chats_per_second: float = 0.5
    chat_seconds: float = 20.0
    every: float = 2.0
    agents: int = 4
    warmup: float = 5.0
    settle: float = 2.0
    seed: int = 11


@dataclass
class Outcome:
    """A configuration's steps, the one held, and the database's own count."""

    processes: int
    steps: list[Step]
    warm: Step
    stored: int = 0
    chat_failed: int = 0
    chat_errors: list[str] = field(default_factory=list)
    connections: int = 0

    @property
    def held(self) -> Step | None:
        ok = [s for s in self.steps if s.held]
        return max(ok, key=lambda s: s.rate) if ok else None

    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in [self.warm, *self.steps])


async def search(measure_held: Any, opts: Options) -> None:
    """Doubling from the start rate while steps hold (up to ``max_rate``) — or halving, at
    most ``halvings`` times, while they fail — then bisecting between the highest rate held
    and the lowest failed."""
    lo, hi, r = 0.0, 0.0, opts.start_rate
    if not await measure_held(r):
        hi = r
        for _ in range(opts.halvings):
            r = round(r / 2)
            if r < 1:
                return
            if await measure_held(r):
                lo = r
                break
            hi = r
        else:
            return
    else:
        while True:
            lo = r
            if r >= opts.max_rate:
                return
            r = min(r * 2, opts.max_rate)
            if not await measure_held(r):
                hi = r
                break
    for _ in range(opts.bisect):
        mid = round((lo + hi) / 2)
        if mid <= lo or mid >= hi:
            return
        if await measure_held(mid):
            lo = mid
        else:
            hi = mid


async def drive(port: int, pid: int, tokens: list[str], opts: Options, processes: int) -> Outcome:
    base = f"http://127.0.0.1:{port}"
    http = Http(port)
    traffic = Traffic(http, base, opts.seed)
    chats = Chats(base, tokens, opts.chats_per_second, opts.chat_seconds, opts.every, opts.seed)
    await chats.start()
    warm = Step(opts.start_rate, opts.warmup)  # visitors and chats under way; not counted
    await traffic.run(warm)
    outcome = Outcome(processes, [], warm)

    async def measure(rate: float) -> bool:
        # A failed step is tried again (``retries``): on a machine shared with other jobs a
        # moment's stall of everything fails a step whose p99 is its second-worst batch.
        for _ in range(1 + opts.retries):
            if await once(rate):
                return True
        return False

    async def once(rate: float) -> bool:
        await asyncio.sleep(opts.settle)  # what the previous step left behind, done
        step = Step(rate, opts.seconds, opts.p99_ms)
        workers = workers_of(pid)
        every = [pid, *descendants(pid)]
        c0, w0, r0 = sum(map(cpu_s, every)), [cpu_s(w) for w in workers], own_cpu_s()
        await traffic.run(step)
        step.server_cpu_s = sum(map(cpu_s, every)) - c0
        step.client_cpu_s = own_cpu_s() - r0
        step.worker_cpu_s = [cpu_s(w) - c for w, c in zip(workers, w0, strict=True)]
        step.load = os.getloadavg()
        lat, sent, opened = chats.window(step.started, step.ended)
        step.chat_delivery, step.chat_messages, step.chat_opened = lat, sent, opened
        step.chat_errors = chats.failed
        outcome.steps.append(step)
        print(step_line(processes, step), flush=True)
        return step.held

    await search(measure, opts)
    await traffic.drain()
    await chats.close()
    outcome.chat_failed = chats.failed
    outcome.chat_errors = chats.stats.errors
    outcome.connections = http.opened
    http.close()
    return outcome


def configuration(processes: int, opts: Options, *, use_uvloop: bool = True) -> Outcome:
    """A server of ``processes`` on a fresh database and Redis prefix; the search on it."""
    tmp = Path(tempfile.mkdtemp(prefix="opp-bench-load-"))
    # Each chat stays about its talk time plus its opening and wrap-up: room for all of
    # them at the rate asked, and pacing's count of slots to match.
    live = opts.chats_per_second * (opts.chat_seconds + 15)
    capacity = max(2, -(-int(live + 1) // max(opts.agents, 1)) + 2)
    ws = chat.bench_workspace(tmp, opts.agents, capacity)
    db_url = pg_database()
    prefix = f"bench-load-{uuid.uuid4().hex[:8]}:"
    port = chat.free_port()
    server = None
    try:
        server = start_server(
            ws, tmp / "data", port, db_url=db_url, redis_prefix=prefix, processes=processes
        )
        tokens = chat.sign_in_agents(db_url, opts.agents)
        coro = drive(port, server.pid, tokens, opts, processes)
        out = run_loop(coro, use_uvloop)
        out.stored = stored_events(db_url)
        return out
    except BaseException:
        print((tmp / "server.log").read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        chat.drop_pg(db_url)
        chat.forget_redis(prefix)
        shutil.rmtree(tmp, ignore_errors=True)


def run_loop(coro: Any, use_uvloop: bool) -> Any:
    if use_uvloop:
        try:
            import uvloop

            return uvloop.run(coro)
        except ImportError:
            pass
    return asyncio.run(coro)


# ---- what is printed ------------------------------------------------------------------


def step_line(processes: int, s: Step) -> str:
    shares = "/".join(f"{c / s.seconds:.0%}" for c in s.worker_cpu_s)
    per_event = s.server_cpu_s / s.answered_events * 1e6 if s.answered_events else float("nan")
    rechecks = sum(s.rechecks.values())
    bad_rechecks = rechecks - s.rechecks[200]
    recheck_codes = f": {dict(s.rechecks)}" if bad_rechecks else ""
    return (
        f"{processes}p {s.rate:6.0f} ev/s offered: answered {s.events_s:6.0f} ev/s "
        f"({sum(s.answers.values())} batches), p50 {s.p50:6.1f} p99 {s.p99:7.1f} "
        f"max {pct(s.latencies, 1.0):7.1f} ms, errors {s.errors}"
        f"{' ' + dict(s.answers).__repr__() if s.errors else ''}, client lag p99 "
        f"{pct(s.lags, 0.99):.1f} ms | server {s.server_cpu_s / s.seconds:.0%} CPU "
        f"(workers {shares}), {per_event:.0f} µs/event; client {s.client_cpu_s / s.seconds:.0%} "
        f"| rechecks {rechecks} ({bad_rechecks} not 200{recheck_codes}), offers "
        f"{sum(s.offers.values())}, reports "
        f"{sum(s.reports.values())} ({s.reports_refused} refused, {s.report_errors} failed) | "
        f"chats: {s.chat_opened} opened, {s.chat_messages} msgs, delivery p99 "
        f"{pct(s.chat_delivery, 0.99):.1f} ms | load {s.load[0]:.1f} "
        f"| {'held' if s.held else 'NOT held'}"
    )


def amdahl(speedup: float, n: int) -> tuple[float, float]:
    """The parallel share ``p`` fitted to a speedup on 2 processes, and the speedup it
    predicts on ``n``: S(2) = 1 / ((1 - p) + p / 2).

    >>> amdahl(1.5, 16)[0], round(amdahl(1.5, 16)[1], 2)
    (0.6666666666666667, 2.67)
    """
    p = min(max(2 * (1 - 1 / speedup), 0.0), 1.0) if speedup > 0 else 0.0
    return p, 1 / ((1 - p) + p / n)


def cpu_fit(steps: list[Step]) -> tuple[float, float] | None:
    """Server cores busy = fixed + per_event × events/s, fitted over a configuration's
    steps (least squares): (fixed cores, CPU seconds per event). CPU is spent whatever the
    latency, so every step counts, held or not; ``None`` under two distinct rates.

    >>> a, b = cpu_fit([Step(100, 10, server_cpu_s=3, accepted=1000),
    ...                 Step(300, 10, server_cpu_s=7, accepted=3000)])
    >>> round(a, 3), round(b * 1e6)
    (0.1, 2000)
    """
    xs = [s.events_s for s in steps]
    ys = [s.server_cpu_s / s.seconds for s in steps]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - b * mx, b


def report(outcomes: list[Outcome], opts: Options) -> None:
    la = Path("/proc/loadavg").read_text().split()
    print(
        f"\nheld load of /v1/events (p99 ≤ {opts.p99_ms:g} ms, no errors; steps of "
        f"{opts.seconds:g} s; chats at {opts.chats_per_second:g}/s alongside, each "
        f"{opts.chat_seconds:g} s with a message every {opts.every:g} s); PostgreSQL + Redis; "
        f"{os.cpu_count()} cores shared by servers, PostgreSQL, Redis and this client; "
        f"/proc/loadavg now {' '.join(la[:3])}"
    )
    held: dict[int, float] = {}
    fits: dict[int, tuple[float, float]] = {}
    for o in outcomes:
        h = o.held
        sent = sum(s.events_sent for s in [o.warm, *o.steps])
        answered = sum(s.answered_events for s in [o.warm, *o.steps])
        dup = sum(s.duplicates for s in [o.warm, *o.steps])
        ref = sum(s.refused for s in [o.warm, *o.steps])
        errors = sum(s.errors for s in [o.warm, *o.steps])
        label = f"{o.processes} process{'es' if o.processes > 1 else ''}"
        if h is None:
            print(f"  {label}: no step held (the lowest rate tried failed)")
        else:
            held[o.processes] = h.events_s
            print(
                f"  {label}: held {h.events_s:.0f} events/s (offered {h.rate:.0f}), p50 "
                f"{h.p50:.1f} ms, p99 {h.p99:.1f} ms; chat delivery p99 "
                f"{pct(h.chat_delivery, 0.99):.1f} ms ({len(h.chat_delivery)} messages); "
                f"server CPU {h.server_cpu_s / h.answered_events * 1e6:.0f} µs/event "
                f"({h.server_cpu_s / h.seconds:.0%} of one core), client lag p99 "
                f"{pct(h.lags, 0.99):.1f} ms; load {h.load[0]:.1f}"
            )
        print(
            f"    all steps: {sent} events sent, {answered} answered ({answered - dup - ref} "
            f"accepted, {dup} duplicates, {ref} refused), {o.stored} stored in the database; "
            f"{errors} batches not answered 200; chats failed {o.chat_failed}; "
            f"{o.connections} connections opened"
        )
        fit = cpu_fit(o.steps)
        if fit is not None and fit[1] > 0:
            fixed, per_event = fit
            per_core = (1 - fixed / o.processes) / per_event
            fits[o.processes] = fit
            print(
                f"    CPU fit over its steps: {fixed:.2f} of a core busy without events "
                f"({fixed / o.processes:.2f} per process: polls, flushes, chats), "
                f"{per_event * 1e6:.0f} µs per event more; a process whose core is all its "
                f"own saturates near {per_core:.0f} events/s (p99 is over the limit well "
                f"before)"
            )
        for e in o.chat_errors[:3]:
            print(f"    chat error: {e[:200]}")
    if 1 in held and 2 in held:
        factor = held[2] / held[1]
        p, s16 = amdahl(factor, 16)
        print(f"scaling 1 → 2 processes: {factor:.2f}× (held {held[1]:.0f} → {held[2]:.0f} ev/s)")
        if factor > 2:
            guess = (
                "over 2×: the 1-process figure was held down by something other than the "
                "server (a stall of the shared machine during its steps); no prediction"
            )
        elif factor <= 1:
            guess = "no gain: Amdahl fitted to it predicts none on 16 processes either"
        else:
            guess = (
                f"Amdahl fitted to the two points (parallel share {p:.2f}) predicts {s16:.1f}× "
                f"on 16 processes, ≈ {held[1] * s16:.0f} events/s, assuming 16 dedicated "
                f"cores and that PostgreSQL and Redis keep up (at some rate PostgreSQL's "
                f"commits become the limit instead)"
            )
        if 2 in fits:
            fixed, per_event = fits[2]
            ceiling = 16 * (1 - fixed / 2) / per_event
            print(
                f"  CPU: with the cost per event and per process measured on 2 processes, "
                f"16 processes on 16 cores of their own saturate near {ceiling:.0f} "
                f"events/s — if PostgreSQL and Redis, elsewhere, keep up; the held load "
                f"(p99 ≤ {opts.p99_ms:g} ms) is below that ceiling"
            )
        print(
            f"  {guess}. On this 2-core machine the load generator, PostgreSQL and Redis "
            f"share the cores with the servers (and other jobs may too: see the load "
            f"average), so the factor is a lower bound of what dedicated cores give."
        )
        h1, h2 = (o.held for o in outcomes if o.processes in (1, 2))
        assert h1 is not None and h2 is not None
        predicted = f"Amdahl → {s16:.1f}× on 16" if 1 < factor <= 2 else "no 16-process fit"
        print(
            f"README | load: snippet traffic (batches, rechecks, action reports) + chats at "
            f"{opts.chats_per_second:g}/s, PostgreSQL + Redis, 2 shared cores (load "
            f"{h1.load[0]:.0f}–{h2.load[0]:.0f}) | held (p99 ≤ {opts.p99_ms:g} ms) "
            f"{held[1]:.0f} ev/s on 1 process, {held[2]:.0f} on 2 (`--workers 2`), "
            f"{factor:.2f}×; p99 {h1.p99:.0f} / {h2.p99:.0f} ms; chat delivery p99 "
            f"{pct(h1.chat_delivery, 0.99):.0f} / {pct(h2.chat_delivery, 0.99):.0f} ms; "
            f"{predicted} (a lower bound) | `python bench/load.py` |"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="each step of the search")
    ap.add_argument("--p99-ms", type=float, default=P99_LIMIT_MS, help="a step holds under it")
    ap.add_argument("--start-rate", type=float, default=100.0, help="events/s of the first step")
    ap.add_argument("--max-rate", type=float, default=6400.0, help="events/s never exceeded")
    ap.add_argument("--bisect", type=int, default=2, help="steps after the first failure")
    ap.add_argument("--retries", type=int, default=1, help="tries more of a failed step")
    ap.add_argument("--chats-per-second", type=float, default=0.5, help="chats opened per second")
    ap.add_argument("--chat-seconds", type=float, default=20.0, help="how long each chat talks")
    ap.add_argument("--every", type=float, default=2.0, help="seconds between chat messages")
    ap.add_argument("--agents", type=int, default=4, help="desk sockets (agents)")
    ap.add_argument("--processes", default="1,2", help="server processes, e.g. 1,2")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="a short run (under 2 minutes)")
    args = ap.parse_args(argv)
    try:
        procs = [int(p) for p in args.processes.split(",")]
    except ValueError:
        ap.error(f"--processes: a comma-separated list of numbers, not {args.processes!r}")
    if not procs or any(p < 1 for p in procs):
        ap.error("--processes: each at least 1")
    opts = Options(
        seconds=args.seconds,
        p99_ms=args.p99_ms,
        start_rate=args.start_rate,
        max_rate=args.max_rate,
        bisect=args.bisect,
        retries=args.retries,
        chats_per_second=args.chats_per_second,
        chat_seconds=args.chat_seconds,
        every=args.every,
        agents=args.agents,
        seed=args.seed,
    )
    if args.quick:
        opts.seconds, opts.warmup, opts.settle, opts.bisect = 4.0, 2.0, 1.0, 1
        opts.max_rate, opts.halvings, opts.retries = min(opts.max_rate, 1600.0), 2, 0
        opts.chat_seconds = 8.0
    print(f"/proc/loadavg at the start: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    outcomes = [configuration(p, opts) for p in procs]
    report(outcomes, opts)


if __name__ == "__main__":
    main()
