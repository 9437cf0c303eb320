"""The clients of ``bench/chat.py``: visitors offered the chat through the real path, and
agents' desks that accept every chat routed to them; what each saw, timed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from opportune.core.actionmaps import in_holdout

CHAT_MAP = "loan-struggle-chat"  # the demo's chat offer (bot loan-help, then queue loans)
HEARTBEAT_S = 20.0  # as the widget


@dataclass
class Stats:
    """What the clients saw, by message id (``m-<conversation>-<k>``)."""

    sent: dict[str, float] = field(default_factory=dict)
    delivered: dict[str, float] = field(default_factory=dict)  # id -> latency (s)
    acked: dict[str, float] = field(default_factory=dict)
    doubles: int = 0  # a message the agent received twice
    offers: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # alerts per chat
    errors: list[str] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


class Desk:
    """One agent's desk: available, accepts every chat offered, notes each visitor message;
    with ``wrap_code``, closes each chat that reaches wrap-up with that code (its slot then
    frees, so chats can come and go for as long as a run lasts)."""

    def __init__(self, ws: ClientConnection, stats: Stats, wrap_code: str | None = None) -> None:
        self.ws, self.stats, self.wrap_code = ws, stats, wrap_code
        self.ready = asyncio.Event()
        self.wrapped: set[str] = set()

    async def run(self) -> None:
        try:
            await self._run()
        except ConnectionClosed as exc:
            self.stats.errors.append(f"desk: socket closed: {exc}")

    async def _run(self) -> None:
        await self.ws.send(json.dumps({"type": "presence", "presence": "available"}))
        async for raw in self.ws:
            at = time.perf_counter()
            f = json.loads(raw)
            kind = f.get("type")
            if kind == "message":
                m = f["message"]
                mid = m["id"]
                if m["sender"] == "visitor" and mid in self.stats.sent:
                    if mid in self.stats.delivered:
                        self.stats.doubles += 1
                    else:
                        self.stats.delivered[mid] = at - self.stats.sent[mid]
            elif kind == "offer":
                cid = f["conversation"]["id"]
                self.stats.offers[cid] += 1
                await self.ws.send(json.dumps({"type": "accept", "conversation": cid}))
            elif kind == "presence":
                self.ready.set()
            elif kind == "state" and self.wrap_code and f.get("state") == "wrap_up":
                cid = f.get("conversation")
                if isinstance(cid, str) and cid not in self.wrapped:
                    self.wrapped.add(cid)
                    frame = {"type": "wrapup", "conversation": cid, "code": self.wrap_code}
                    await self.ws.send(json.dumps(frame))
            elif kind == "error":
                self.stats.errors.append(f"desk: {f}")


class Visitor:
    """One visitor: offered the chat through the real path, then chatting on its socket."""

    def __init__(self, n: int, vid: str, base: str, stats: Stats) -> None:
        self.n, self.vid, self.base, self.stats = n, vid, base, stats
        self.events = 0
        self.state = ""
        self.moved = asyncio.Condition()
        self.bot_spoke = asyncio.Event()
        self.ws: ClientConnection | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def post_events(self, http: httpx.AsyncClient, *kinds: str) -> dict[str, Any]:
        t = int(time.time() * 1000)
        evs = []
        for kind in kinds:
            self.events += 1
            e = {"id": f"{self.vid}-{self.events}", "ts": t, "type": kind}
            e["url"] = f"{self.base}/demo/apply.html"
            if kind == "form_error":
                e["name"] = "loan"
            evs.append(e)
        body = {"siteKey": "demo-site-key", "visitorId": self.vid, "sentAt": t, "events": evs}
        r = await http.post(f"{self.base}/v1/events", json=body, headers={"origin": self.base})
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    async def offer(self, http: httpx.AsyncClient) -> str:
        """Struggle on the loan form until the chat is offered; accept it and register."""
        await self.post_events(http, "page_view")
        actions = (await self.post_events(http, "form_error", "form_error"))["actions"]
        offer = next((a for a in actions if a.get("type") == "chat"), None)
        if offer is None:
            raise RuntimeError(f"no chat offered: {actions}")
        t = int(time.time() * 1000)
        reports = [
            {"id": offer["id"], "state": "accepted", "ts": t},
            {"id": offer["id"], "state": "started", "ts": t, "form": {"firstName": f"V{self.n}"}},
        ]
        body = {"siteKey": "demo-site-key", "visitorId": self.vid, "sentAt": t, "reports": reports}
        r = await http.post(f"{self.base}/v1/actions", json=body, headers={"origin": self.base})
        if r.status_code != 200 or r.json().get("accepted") != 2:
            raise RuntimeError(f"reports not accepted: {r.status_code} {r.text}")
        return str(offer["id"])

    async def until_state(self, *states: str, timeout: float = 60) -> None:
        async with self.moved:
            await asyncio.wait_for(self.moved.wait_for(lambda: self.state in states), timeout)

    async def open(self, http: httpx.AsyncClient) -> None:
        """From the first event to a conversation active with an agent, each step timed."""
        phases, t0 = self.stats.phases, time.perf_counter()
        action = await self.offer(http)
        t1 = time.perf_counter()
        phases["offer (3 events + 2 reports)"].append(t1 - t0)
        ws_url = self.base.replace("http", "ws", 1) + "/v1/chat?siteKey=demo-site-key"
        self.ws = await connect(ws_url, origin=self.base, ping_interval=None)  # type: ignore[arg-type]
        self.tasks.append(asyncio.create_task(self.read()))
        start = {"type": "start", "visitorId": self.vid, "action": action, "locale": "en"}
        await self.ws.send(json.dumps({**start, "form": {"firstName": f"V{self.n}"}}))
        await asyncio.wait_for(self.bot_spoke.wait(), 60)
        t2 = time.perf_counter()
        phases["socket + start + bot's first answer"].append(t2 - t1)
        await self.ws.send(json.dumps({"type": "escalate"}))
        await self.until_state("assigned", "active")
        t3 = time.perf_counter()
        phases["escalate -> routed (assigned)"].append(t3 - t2)
        await self.until_state("active")
        t4 = time.perf_counter()
        phases["routed -> agent accepted (active)"].append(t4 - t3)
        phases["whole: first event -> active"].append(t4 - t0)
        self.tasks.append(asyncio.create_task(self.heartbeat()))

    async def read(self) -> None:
        try:
            await self._read()
        except ConnectionClosed as exc:
            self.stats.errors.append(f"visitor {self.n}: socket closed: {exc}")

    async def _read(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            at = time.perf_counter()
            f = json.loads(raw)
            kind = f.get("type")
            if kind == "ack":
                mid = f["id"]
                if mid in self.stats.sent and mid not in self.stats.acked:
                    self.stats.acked[mid] = at - self.stats.sent[mid]
            elif kind == "state":
                async with self.moved:
                    self.state = f["state"]
                    self.moved.notify_all()
            elif kind == "message" and f["message"]["sender"] == "bot":
                self.bot_spoke.set()
            elif kind == "error":
                self.stats.errors.append(f"visitor {self.n}: {f}")

    async def heartbeat(self) -> None:
        assert self.ws is not None
        await asyncio.sleep(random.random() * HEARTBEAT_S)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.ws.send('{"type":"ping"}')
                await asyncio.sleep(HEARTBEAT_S)

    async def talk(self, start: float, offset: float, every: float, until: float) -> None:
        """A message every ``every`` seconds from ``start + offset`` until ``until``."""
        assert self.ws is not None
        k = 0
        while (due := start + offset + k * every) < until:
            await asyncio.sleep(max(due - time.perf_counter(), 0))
            mid = f"m-{self.n}-{k}"
            frame = json.dumps(
                {"type": "message", "id": mid, "text": f"question {k} from {self.n}"}
            )
            self.stats.sent[mid] = time.perf_counter()
            try:
                await self.ws.send(frame)
            except ConnectionClosed as exc:
                self.stats.errors.append(f"visitor {self.n}: socket closed: {exc}")
                return
            k += 1

    async def end(self, timeout: float = 30) -> None:
        """The widget's End chat: the conversation leaves ``active`` (for wrap-up)."""
        assert self.ws is not None
        await self.ws.send('{"type":"end"}')
        async with self.moved:
            await asyncio.wait_for(self.moved.wait_for(lambda: self.state != "active"), timeout)

    async def aclose(self) -> None:
        for t in self.tasks:
            t.cancel()
        if self.ws is not None:
            await self.ws.close()


def visitor_ids(n: int, seed: int) -> list[str]:
    """``n`` visitor ids outside the chat offer's holdout (a holdout visitor is never offered)."""
    out, i = [], 0
    while len(out) < n:
        vid = f"bench-{seed}-{i}"
        if not in_holdout(vid, CHAT_MAP, 0.1):
            out.append(vid)
        i += 1
    return out
