"""A chat across two server processes on one PostgreSQL and one Redis, and processes killed
mid-conversation: the visitor's socket on one process, the agent's desk on the other,
messages both ways through Redis pub/sub; ``kill -9`` of the visitor's process just after
the visitor sent a message; the visitor resumes on the other process and resends what was
not acknowledged. Then that process dies too and the first one restarts. Nothing is lost,
nothing is doubled, everything is in order — for the visitor, the agent and the database."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.core.actionmaps import in_holdout
from opportune.store import users
from opportune.store.db import make_engine
from opportune.store.schema import conversation_messages

REDIS_URL = "redis://127.0.0.1:6379/15"
SITE = "https://bank.example"  # the visitor's page: the bank's site, not either process
Frame = dict[str, Any]

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``opportune serve`` process on a fixed port, started again after a kill."""

    def __init__(self, name: str, env: dict[str, str], workspace: Path, tmp: Path) -> None:
        self.name, self.env, self.workspace, self.tmp = name, env, workspace, tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / f"{name}.log"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "opportune.cli", "serve", "--port", str(self.port)]
        cmd += ["--workspace", str(self.workspace)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90  # a loaded 2-core machine starts slowly
        while True:
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{self.name} did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """``kill -9``: no shutdown, no flush, nothing said to the clients."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def servers(pg_url: str, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    ws = tmp_path / "workspace"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    site = yaml.safe_load((ws / "sites.yaml").read_text())
    site["origins"] = [SITE]
    (ws / "sites.yaml").write_text(yaml.safe_dump(site))
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPPORTUNE_")}
    env |= {
        "OPPORTUNE_DATABASE_URL": pg_url,
        "OPPORTUNE_REDIS_URL": REDIS_URL,
        "OPPORTUNE_REDIS_PREFIX": prefix,
        "OPPORTUNE_DATA_DIR": str(tmp_path / "data"),
        "OPPORTUNE_API_KEY": "k",
        "OPPORTUNE_RULES_POLL_S": "0.2",
    }
    pair = (Server("A", env, ws, tmp_path), Server("B", env, ws, tmp_path))
    try:
        for s in pair:
            s.start()
        yield pair
    finally:
        for s in pair:
            s.stop()
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(prefix + "*"):
            r.delete(key)
        r.close()


def agent_token(db_url: str) -> str:
    """Ana (loans) signed in: a user and a live session, straight in the store."""
    eng = make_engine(db_url)
    now = int(time.time() * 1000)
    with eng.begin() as conn:
        user = users.create_user(
            conn,
            email="ana@bank.example",
            name="Ana",
            role="agent",
            password="correct horse battery",
            now_ms=now,
            agent_id="ana",
        )
        token, _ = users.start_session(conn, user, now_ms=now)
    eng.dispose()
    return token


def recv(ws: ClientConnection, test: Callable[[Frame], bool], limit: int = 60) -> Frame:
    """Frames until one passes ``test``; fail after ``limit`` others."""
    for _ in range(limit):
        frame = json.loads(ws.recv(timeout=30))
        if test(frame):
            return frame
    raise AssertionError("no such frame")


class Party:
    """What one side saw across all its sockets: each message checked to come exactly once
    and in sequence order, and the acknowledgements of its own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[Frame] = []
        self.acked: dict[str, int] = {}

    @property
    def last(self) -> int:
        return self.messages[-1]["seq"] if self.messages else 0

    def ids(self) -> list[str]:
        return [m["id"] for m in self.messages]

    def take(self, frame: Frame) -> Frame:
        if frame.get("type") == "message":
            m = frame["message"]
            assert m["seq"] == self.last + 1, f"{self.name}: seq {m['seq']} after {self.last}"
            self.messages.append(m)
        elif frame.get("type") == "ack":
            assert self.acked.setdefault(frame["id"], frame["seq"]) == frame["seq"]
        return frame

    def read(self, ws: ClientConnection, test: Callable[[Frame], bool]) -> Frame:
        return recv(ws, lambda f: test(self.take(f)))

    def drain(self, ws: ClientConnection) -> None:
        """Whatever reached the client before its server died, then the closed socket."""
        with pytest.raises((ConnectionClosed, TimeoutError)):
            for _ in range(100):
                self.take(json.loads(ws.recv(timeout=30)))
        ws.close()


def is_(kind: str, **fields: Any) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items())


def message(mid: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == "message" and f["message"]["id"] == mid


def chat_offer(server: Server, vid: str) -> str:
    """Struggle on the loan form (from the bank's site) until the chat is offered; accept
    it and register. Offers wait for the agent's presence to reach this process."""
    apply = f"{SITE}/demo/apply.html"
    n = 0

    def send(*kinds: str) -> list[Frame]:
        nonlocal n
        t = int(time.time() * 1000)
        evs = []
        for kind in kinds:
            n += 1
            evs.append({"id": f"{vid}-{n}", "ts": t, "type": kind, "url": apply, "name": "loan"})
        body = {"siteKey": "demo-site-key", "visitorId": vid, "sentAt": t, "events": evs}
        r = httpx.post(f"{server.base}/v1/events", json=body, headers={"origin": SITE})
        assert r.status_code == 200, r.text
        return r.json().get("actions", [])  # type: ignore[no-any-return]

    actions = send("page_view", "form_error")
    for _ in range(100):
        offer = next((a for a in actions if a.get("type") == "chat"), None)
        if offer is not None:
            break
        time.sleep(0.2)
        actions = send("form_error")
    else:
        pytest.fail("the chat was never offered")
    t = int(time.time() * 1000)
    reports = [
        {"id": offer["id"], "state": "accepted", "ts": t},
        {"id": offer["id"], "state": "started", "ts": t, "form": {"firstName": "Eva"}},
    ]
    body = {"siteKey": "demo-site-key", "visitorId": vid, "sentAt": t, "reports": reports}
    r = httpx.post(f"{server.base}/v1/actions", json=body, headers={"origin": SITE})
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    return str(offer["id"])


def open_desk(server: Server, token: str) -> tuple[ClientConnection, Frame]:
    desk = connect(
        server.ws + "/agent/ws",
        origin=server.base,  # type: ignore[arg-type]
        additional_headers={"Cookie": f"opportune_session={token}"},
        proxy=None,
        legacy=True,  # a plain connection, closed by the test (not a `with` block)
    )
    hello = json.loads(desk.recv(timeout=30))
    assert hello["type"] == "hello"
    return desk, hello


def visitor_socket(server: Server) -> ClientConnection:
    return connect(
        server.ws + "/v1/chat?siteKey=demo-site-key",
        origin=SITE,  # type: ignore[arg-type]
        proxy=None,
        legacy=True,  # a plain connection, closed by the test (not a `with` block)
    )


def resume(server: Server, vid: str, cid: str, visitor: Party) -> ClientConnection:
    chat = visitor_socket(server)
    chat.send(
        json.dumps({"type": "resume", "visitorId": vid, "conversation": cid, "after": visitor.last})
    )
    started = visitor.read(chat, is_("started"))
    assert (started["conversation"], started["state"]) == (cid, "active")
    return chat


def say(ws: ClientConnection, mid: str, text: str, **extra: Any) -> None:
    ws.send(json.dumps({"type": "message", "id": mid, "text": text, **extra}))


def test_a_chat_survives_kill_9_of_either_process_with_nothing_lost_or_doubled(
    servers: tuple[Server, Server], pg_url: str
) -> None:
    a, b = servers
    token = agent_token(pg_url)
    vid = next(
        f"kill{i}" for i in range(1000) if not in_holdout(f"kill{i}", "loan-struggle-chat", 0.1)
    )
    visitor, agent = Party("visitor"), Party("agent")
    # The agent's desk on B, available; the visitor offered the chat and talking on A.
    desk, _ = open_desk(b, token)
    desk.send(json.dumps({"type": "presence", "presence": "available"}))
    recv(desk, is_("presence", presence="available"))
    action = chat_offer(a, vid)
    chat = visitor_socket(a)
    chat.send(json.dumps({"type": "start", "visitorId": vid, "action": action, "locale": "en"}))
    cid = visitor.read(chat, is_("started"))["conversation"]
    visitor.read(chat, lambda f: f.get("type") == "message" and f["message"]["sender"] == "bot")
    chat.send(json.dumps({"type": "escalate"}))
    visitor.read(chat, is_("state", state="assigned"))
    # Routed on A, alerted on B (through Redis); accepted on B, seen active on A.
    assert recv(desk, is_("offer"))["conversation"]["id"] == cid
    desk.send(json.dumps({"type": "accept", "conversation": cid}))
    agent.read(desk, is_("state", state="active", conversation=cid))
    visitor.read(chat, is_("state", state="active"))
    say(chat, "v1", "Hello, is anyone there?")
    visitor.read(chat, is_("ack", id="v1"))
    agent.read(desk, message("v1"))
    say(desk, "a1", "Yes, Ana here.", conversation=cid)
    visitor.read(chat, message("a1"))

    # kill -9 A just after the visitor sent v2: stored or not, acknowledged or not.
    say(chat, "v2", "I need 12,000 over 5 years")
    a.kill()
    visitor.drain(chat)
    chat = resume(b, vid, cid, visitor)
    say(chat, "v2", "I need 12,000 over 5 years")  # the resend of what was not acknowledged
    visitor.read(chat, is_("ack", id="v2"))
    say(desk, "a2", "Let me check that for you.", conversation=cid)
    visitor.read(chat, message("a2"))
    agent.read(desk, message("a2"))
    assert "v2" in agent.ids()

    # Now B dies with both sockets, and A comes back: everyone reconnects to A.
    say(chat, "v3", "Thanks, I'll wait")
    b.kill()
    visitor.drain(chat)
    agent.drain(desk)
    a.start()
    desk, hello = open_desk(a, token)
    assert [(c["id"], c["state"]) for c in hello["conversations"]] == [(cid, "active")]
    desk.send(json.dumps({"type": "follow", "conversation": cid, "after": agent.last}))
    chat = resume(a, vid, cid, visitor)
    say(chat, "v3", "Thanks, I'll wait")
    visitor.read(chat, is_("ack", id="v3"))
    say(desk, "a3", "Approved in principle!", conversation=cid)
    visitor.read(chat, message("a3"))
    agent.read(desk, message("a3"))
    assert "v3" in agent.ids()
    chat.close()
    desk.close()

    check_store(pg_url, cid, visitor, agent)


def check_store(db_url: str, cid: str, visitor: Party, agent: Party) -> None:
    """Every acknowledged message in the database once, with the sequence it was
    acknowledged as; the visitor and the agent saw exactly the stored transcript."""
    eng = make_engine(db_url)
    with eng.connect() as conn:
        m = conversation_messages.c
        stored = conn.execute(
            select(m.seq, m.client_id, m.sender).where(m.conversation_id == cid).order_by(m.seq)
        ).all()
    eng.dispose()
    ids = [r.client_id for r in stored]
    assert [r.seq for r in stored] == list(range(1, len(stored) + 1))
    assert len(ids) == len(set(ids)), "a message stored twice"
    mine = ["v1", "v2", "v3", "a1", "a2", "a3"]
    assert all(ids.count(x) == 1 for x in mine)
    # Every acknowledged message is in the database, with the sequence it was acknowledged as.
    seq_of = {r.client_id: r.seq for r in stored}
    assert {k: seq_of[k] for k in visitor.acked} == visitor.acked
    assert {k: seq_of[k] for k in agent.acked} == agent.acked
    # The visitor saw the whole transcript once, in order; the agent all of it from the
    # accept on (its desk follows from the start: the bot's part too).
    assert visitor.ids() == ids
    assert agent.ids() == ids
