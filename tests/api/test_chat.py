"""The chat sockets end to end on real databases: a visitor offered a chat opens it, the
router assigns it to the signed-in agent, messages go both ways exactly once, a reconnect
resumes after the last sequence seen, and the wrap-up code ends the interaction with the
KPI label training reads. Bad input gets a precise close code or error frame."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.core.actionmaps import in_holdout
from opportune.ml.routing.features import decode_features
from opportune.settings import Settings
from opportune.store import users
from opportune.store.db import make_engine
from opportune.store.schema import conversation_messages, interactions

KEY = {"X-API-Key": "k"}
ORIGIN = "http://127.0.0.1:8000"
APPLY = f"{ORIGIN}/demo/apply.html"
CHAT = "/v1/chat?siteKey=demo-site-key"
Frame = dict[str, Any]


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    settings = Settings(database_url=db_url, workspace=ws, data_dir=tmp_path, api_key="k")
    with TestClient(create_app(settings)) as c:
        c.db_url = db_url  # type: ignore[attr-defined]
        yield c


def engine_of(client: TestClient) -> Any:
    return make_engine(client.db_url)  # type: ignore[attr-defined]


def sign_in(client: TestClient, *, agent: str | None, role: str = "agent") -> str:
    """A user and a live session, straight in the store (the pages are tested elsewhere)."""
    eng = engine_of(client)
    now = int(time.time() * 1000)
    with eng.begin() as conn:
        user = users.create_user(
            conn,
            email=f"{agent or role}@bank.example",
            name=(agent or role).title(),
            role=role,  # type: ignore[arg-type]
            password="correct horse battery",
            now_ms=now,
            agent_id=agent,
            queues=["loans"] if role == "supervisor" else (),
        )
        token, _ = users.start_session(conn, user, now_ms=now)
    eng.dispose()
    return token


def until(ws: WebSocketTestSession, test: Callable[[Frame], bool], limit: int = 40) -> Frame:
    """Read frames until one passes ``test``; fail after ``limit`` others."""
    seen = []
    for _ in range(limit):
        frame = ws.receive_json()
        if test(frame):
            return frame
        seen.append(frame)
    raise AssertionError(f"no such frame among {seen}")


def of_type(kind: str, **fields: Any) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items())


class Visitor:
    def __init__(self, client: TestClient, prefix: str) -> None:
        self.client, self.n = client, 0
        self.vid = next(
            f"{prefix}{i}"
            for i in range(1000)
            if not in_holdout(f"{prefix}{i}", "loan-struggle-chat", 0.1)
        )

    def send(self, *events: Frame) -> Frame:
        t = int(time.time() * 1000)
        evs = []
        for e in events:
            self.n += 1
            evs.append({"id": f"{self.vid}-{self.n}", "ts": t, **e})
        body = {"siteKey": "demo-site-key", "visitorId": self.vid, "sentAt": t, "events": evs}
        r = self.client.post("/v1/events", json=body, headers={"origin": ORIGIN})
        assert r.status_code == 200, r.text
        return r.json()

    def chat_offer(self) -> Frame:
        """Struggle on the loan form until the chat is offered; accept and register."""
        self.send({"type": "page_view", "url": APPLY})
        [offer] = self.send(
            {"type": "form_error", "name": "loan", "url": APPLY},
            {"type": "form_error", "name": "loan", "url": APPLY},
        )["actions"]
        t = int(time.time() * 1000)
        body = {
            "siteKey": "demo-site-key",
            "visitorId": self.vid,
            "sentAt": t,
            "reports": [
                {"id": offer["id"], "state": "accepted", "ts": t},
                {"id": offer["id"], "state": "started", "ts": t, "form": {"firstName": "Ana"}},
            ],
        }
        assert (
            self.client.post("/v1/actions", json=body, headers={"origin": ORIGIN}).json()[
                "accepted"
            ]
            == 2
        )
        return offer


def desk(client: TestClient, token: str) -> WebSocketTestSession:
    client.cookies.set("opportune_session", token)
    try:
        return client.websocket_connect("/agent/ws", headers={"origin": "http://testserver"})
    finally:
        client.cookies.clear()


def test_a_chat_goes_from_the_offer_to_the_agent_and_ends_with_a_wrap_up_code(
    client: TestClient,
) -> None:
    token = sign_in(client, agent="ana")
    with desk(client, token) as agent:
        hello = agent.receive_json()
        assert hello["type"] == "hello" and hello["agent"]["name"] == "Ana García"
        assert hello["conversations"] == []
        agent.send_json({"type": "presence", "presence": "available"})
        until(agent, of_type("presence", presence="available"))
        v = Visitor(client, "chat")
        offer = v.chat_offer()
        with client.websocket_connect(CHAT, headers={"origin": ORIGIN}) as chat:
            start = {"type": "start", "visitorId": v.vid, "action": offer["id"], "locale": "en"}
            chat.send_json({**start, "form": {"firstName": "Ana"}})
            started = chat.receive_json()
            assert started["type"] == "started" and started["state"] == "bot"
            cid = started["conversation"]
            # The loan bot answers first, with buttons; a press is a message with a choice.
            welcome = until(chat, of_type("message"))["message"]
            assert welcome["sender"] == "bot" and welcome["payload"]["buttons"]
            choice = welcome["payload"]["buttons"][0]
            chat.send_json(
                {"type": "message", "id": "v0", "text": choice["label"], "choice": choice["value"]}
            )
            assert until(chat, of_type("ack", id="v0"))["seq"] == welcome["seq"] + 1
            mine = until(chat, of_type("message"))["message"]  # the visitor's own, echoed
            assert (mine["id"], mine["payload"]) == ("v0", {"choice": choice["value"]})
            answer = until(chat, of_type("message"))["message"]
            assert answer["sender"] == "bot" and answer["seq"] == welcome["seq"] + 2
            chat.send_json({"type": "escalate"})
            state = until(chat, of_type("state", state="assigned"))
            assert state["agent"] == {"name": "Ana García"}  # the name, never the id
            alert = until(agent, of_type("offer"))["conversation"]
            assert alert["id"] == cid and alert["name"] == "Ana" and alert["queue"] == "loans"
            assert alert["intent"] == "loan-amount"
            agent.send_json({"type": "follow", "conversation": cid, "after": 0})
            bot_part = [until(agent, of_type("message"))["message"]["sender"] for _ in range(3)]
            assert bot_part == ["bot", "visitor", "bot"]  # the agent sees the transcript so far
            agent.send_json({"type": "accept", "conversation": cid})
            until(agent, of_type("state", state="active", conversation=cid))
            until(chat, of_type("state", state="active"))
            agent.send_json({"type": "message", "conversation": cid, "id": "a1", "text": "Hello!"})
            got = until(chat, lambda f: f.get("type") == "message" and f["message"]["id"] == "a1")
            assert (got["message"]["sender"], got["message"]["text"]) == ("agent", "Hello!")
            hello_seq = got["message"]["seq"]
            hostile = "<img src=x onerror=alert(1)>"
            chat.send_json({"type": "message", "id": "v1", "text": hostile})
            assert until(chat, of_type("ack", id="v1")) == {
                "type": "ack",
                "id": "v1",
                "seq": hello_seq + 1,
                "duplicate": False,
            }
            seen = until(agent, lambda f: f.get("type") == "message" and f["message"]["id"] == "v1")
            assert seen["message"]["text"] == hostile and seen["conversation"] == cid
        # The page reloads: a new socket resumes after the agent's hello and misses nothing,
        # doubles nothing.
        with client.websocket_connect(CHAT, headers={"origin": ORIGIN}) as chat:
            chat.send_json(
                {"type": "resume", "visitorId": v.vid, "conversation": cid, "after": hello_seq}
            )
            assert chat.receive_json()["type"] == "started"
            again = until(chat, of_type("message"))["message"]
            assert (again["seq"], again["id"]) == (hello_seq + 1, "v1")
            chat.send_json({"type": "message", "id": "v1", "text": hostile})  # a resend
            assert until(chat, of_type("ack", id="v1"))["duplicate"] is True
            chat.send_json({"type": "message", "id": "v2", "text": "Thanks"})
            assert until(chat, of_type("ack", id="v2"))["seq"] == hello_seq + 2
        agent.send_json({"type": "wrapup", "conversation": cid, "code": "sold-it"})
        err = until(agent, of_type("error", conversation=cid))
        assert err["code"] == "unknown_wrap_up_code" and "loan-sold" in err["message"]
        agent.send_json(
            {
                "type": "wrapup",
                "conversation": cid,
                "code": "loan-sold",
                "notes": "Wants 10k over 5 years",
            }
        )
        until(agent, of_type("state", state="closed", conversation=cid))
        total = hello_seq + 2
    eng = engine_of(client)
    with eng.connect() as conn:
        row = conn.execute(select(interactions).where(interactions.c.id == cid)).one()
        n = conn.execute(
            select(func.count()).where(conversation_messages.c.conversation_id == cid)
        ).scalar_one()
    eng.dispose()
    assert (row.status, row.agent_id, row.wrap_up_code) == ("ended", "ana", "loan-sold")
    assert row.visitor_id == v.vid and n == total  # the resend stored once
    assert decode_features(row.features)["intent:loan-amount"] == 1.0  # for the routing model


def test_bad_input_gets_a_precise_close_code(client: TestClient) -> None:
    # Agents present as another tool reports them: the chat is offered and waits queued.
    r = client.put("/v1/queues/loans/presence", json={"agentsAvailable": 3}, headers=KEY)
    assert r.status_code == 200
    v = Visitor(client, "bad")
    offer = v.chat_offer()

    def closed_with(first: Frame | str, origin: str = ORIGIN) -> int:
        with client.websocket_connect(CHAT, headers={"origin": origin}) as ws:
            if isinstance(first, str):
                ws.send_text(first)
            else:
                ws.send_json(first)
            with pytest.raises(WebSocketDisconnect) as exc:
                for _ in range(10):
                    ws.receive_json()
            return exc.value.code

    start = {"type": "start", "visitorId": v.vid, "action": offer["id"]}
    assert closed_with(start, origin="https://evil.example") == 4403
    assert closed_with("not json") == 4400
    assert closed_with({"type": "message", "id": "x", "text": "hi"}) == 4400
    assert closed_with({**start, "action": "ai_nope"}) == 4404
    assert closed_with({**start, "visitorId": "someone-else"}) == 4404
    assert closed_with({"type": "resume", "visitorId": v.vid, "conversation": "c_nope"}) == 4404
    assert closed_with("x" * 20_000) == 4413
    with client.websocket_connect(CHAT, headers={"origin": ORIGIN}) as ws:
        ws.send_json(start)
        cid = ws.receive_json()["conversation"]
        ws.send_json({"type": "message", "id": "m1", "text": "y" * 4001})
        err = until(ws, of_type("error"))
        assert err["code"] == "bad_message" and "at most 4000" in err["message"]
        assert err["id"] == "m1"
        ws.send_json({"type": "message", "id": "bad id!", "text": "hi"})
        assert "only letters" in until(ws, of_type("error"))["message"]
    # Someone else's conversation: refused without saying more.
    other = Visitor(client, "other")
    other.send({"type": "page_view", "url": APPLY})
    assert closed_with({"type": "resume", "visitorId": other.vid, "conversation": cid}) == 4403
    # A second start of the same offer is the same conversation.
    with client.websocket_connect(CHAT, headers={"origin": ORIGIN}) as ws:
        ws.send_json(start)
        assert ws.receive_json()["conversation"] == cid


def test_the_desk_refuses_forged_sessions_other_sites_and_other_queues(
    client: TestClient,
) -> None:
    def close_code(token: str | None, origin: str = "http://testserver") -> int:
        if token:
            client.cookies.set("opportune_session", token)
        try:
            with client.websocket_connect("/agent/ws", headers={"origin": origin}) as ws:
                with pytest.raises(WebSocketDisconnect) as exc:
                    for _ in range(5):
                        ws.receive_json()
                return exc.value.code
        finally:
            client.cookies.clear()

    assert close_code(None) == 4401
    assert close_code("forged-token") == 4401
    dev = sign_in(client, agent="dev")  # cards only: not a member of loans
    assert close_code(dev, origin="https://evil.example") == 4403
    ana = sign_in(client, agent="ana")
    with desk(client, ana) as agent:
        agent.receive_json()
        agent.send_json({"type": "presence", "presence": "available"})
        until(agent, of_type("presence"))
        v = Visitor(client, "q")
        offer = v.chat_offer()
        with client.websocket_connect(CHAT, headers={"origin": ORIGIN}) as chat:
            chat.send_json({"type": "start", "visitorId": v.vid, "action": offer["id"]})
            cid = chat.receive_json()["conversation"]
            chat.send_json({"type": "escalate"})
            until(agent, of_type("offer"))
    with desk(client, dev) as other:
        other.receive_json()
        other.send_json({"type": "message", "conversation": cid, "id": "d1", "text": "hi"})
        assert until(other, of_type("error"))["message"] == "this conversation is not routed to you"
        other.send_json({"type": "follow", "conversation": cid, "after": 0})
        assert (
            until(other, of_type("error"))["message"] == "not a member of this conversation's queue"
        )
    boss = sign_in(client, agent=None, role="supervisor")
    with desk(client, boss) as sup:
        hello = sup.receive_json()
        assert [c["id"] for c in hello["conversations"]] == [cid]
        sup.send_json({"type": "follow", "conversation": cid, "after": 0})
        sup.send_json({"type": "message", "conversation": cid, "id": "s1", "text": "hi"})
        assert until(sup, of_type("error"))["message"] == (
            "only the agent it is routed to may answer a conversation"
        )


@pytest.mark.parametrize(
    ("locale", "ask", "yes"),
    [
        ("en", "hi, my new debit card came, how do i turn it on?", "Yes, it's active"),
        ("es", "hola, me ha llegado la tarjeta nueva y no sé activarla", "Sí, ya está activa"),
    ],
)
def test_the_help_bot_resolves_a_card_activation_without_an_agent(
    client: TestClient, locale: str, ask: str, yes: str
) -> None:
    """Typed in the visitor's words, in English and in Spanish: understood, the slot asked
    and checked, the steps and the guide given, resolved — and nothing routed."""
    v = Visitor(client, f"bot{locale}")
    help_page = f"{ORIGIN}/demo/help.html"
    v.send({"type": "page_view", "url": help_page})
    [offer] = v.send({"type": "idle", "url": help_page})["actions"]
    assert offer["type"] == "bot"
    with client.websocket_connect(CHAT, headers={"origin": ORIGIN}) as chat:
        chat.send_json(
            {"type": "start", "visitorId": v.vid, "action": offer["id"], "locale": locale}
        )
        started = chat.receive_json()
        assert started["state"] == "bot"

        def bot_says() -> Frame:
            return until(
                chat, lambda f: f.get("type") == "message" and f["message"]["sender"] == "bot"
            )["message"]

        bot_says()  # the welcome
        chat.send_json({"type": "message", "id": "q1", "text": ask})
        what = bot_says()
        card = next(b for b in what["payload"]["buttons"] if b["value"] == "card")
        chat.send_json({"type": "message", "id": "q2", "text": card["label"], "choice": "card"})
        assert "4" in bot_says()["text"]  # the last 4 digits, please
        chat.send_json({"type": "message", "id": "q3", "text": "12"})
        bot_says()  # not 4 digits: asked again
        chat.send_json({"type": "message", "id": "q4", "text": "4821"})
        steps = bot_says()
        assert "app" in steps["text"].lower()
        guide = bot_says()
        assert guide["payload"]["link"]["url"].endswith("/demo/help.html#device")
        check = bot_says()
        done = next(b for b in check["payload"]["buttons"] if b["value"] == "yes")
        assert done["label"] == yes
        chat.send_json({"type": "message", "id": "q5", "text": done["label"], "choice": "yes"})
        bot_says()
        chat.send_json({"type": "end"})
        until(chat, of_type("state", state="closed"))
    eng = engine_of(client)
    with eng.connect() as conn:
        assert conn.execute(select(func.count()).select_from(interactions)).scalar_one() == 0
    eng.dispose()


def queued_chat(client: TestClient, prefix: str) -> tuple[WebSocketTestSession, str]:
    """A visitor's open socket on a chat handed to the loans queue, and its id."""
    v = Visitor(client, prefix)
    offer = v.chat_offer()
    chat = client.websocket_connect(CHAT, headers={"origin": ORIGIN})
    chat.__enter__()
    chat.send_json({"type": "start", "visitorId": v.vid, "action": offer["id"]})
    cid = chat.receive_json()["conversation"]
    chat.send_json({"type": "escalate"})
    return chat, cid


def test_decline_and_transfers_route_again_and_keep_the_transcript(client: TestClient) -> None:
    ana, ben = sign_in(client, agent="ana"), sign_in(client, agent="ben")
    with desk(client, ana) as a, desk(client, ben) as b:
        a.receive_json()
        b.receive_json()
        a.send_json({"type": "presence", "presence": "available"})
        until(a, of_type("presence"))
        chat, cid = queued_chat(client, "tr")
        try:
            until(a, of_type("offer"))
            b.send_json({"type": "presence", "presence": "available"})
            until(b, of_type("presence"))
            # Ana declines: it goes to Ben, the one free agent who did not.
            a.send_json({"type": "decline", "conversation": cid})
            until(b, of_type("offer"))
            b.send_json({"type": "accept", "conversation": cid})
            until(b, of_type("state", state="active", conversation=cid))
            b.send_json({"type": "message", "conversation": cid, "id": "s1", "text": "Hi"})
            until(b, of_type("ack", id="s1"))
            # To the support queue: routed to a card agent (Ana has gone for a break).
            a.send_json({"type": "presence", "presence": "away"})
            until(a, of_type("presence"))
            b.send_json({"type": "transfer", "conversation": cid, "queue": "support"})
            until(b, of_type("state", state="queued", conversation=cid))
            r = client.put("/v1/agents/dev/presence", json={"presence": "available"}, headers=KEY)
            assert r.json()["assigned"][0]["agentId"] == "dev"
            names = [
                f["agent"]["name"]
                for f in (until(chat, of_type("state", state="assigned")) for _ in range(3))
            ]
            assert names == ["Ana García", "Ben Okafor", "Dev Patel"]
            # Ben may no longer steer it.
            b.send_json({"type": "transfer", "conversation": cid, "queue": "loans"})
            assert "not routed to you" in until(b, of_type("error"))["message"]
        finally:
            chat.__exit__(None, None, None)
    eng = engine_of(client)
    with eng.connect() as conn:
        row = conn.execute(select(interactions).where(interactions.c.id == cid)).one()
        texts = (
            conn.execute(
                select(conversation_messages.c.text).where(
                    conversation_messages.c.conversation_id == cid
                )
            )
            .scalars()
            .all()
        )
    eng.dispose()
    assert (row.queue, row.agent_id, row.status) == ("support", "dev", "assigned")
    assert "Hi" in texts  # the transcript went with it


def test_a_visitor_gone_past_the_grace_abandons_the_queue_on_both_records(
    client: TestClient,
) -> None:
    r = client.put("/v1/queues/loans/presence", json={"agentsAvailable": 3}, headers=KEY)
    assert r.status_code == 200  # pacing offers; nobody on the desk takes it
    chat, cid = queued_chat(client, "gone")
    until(chat, of_type("state", state="queued"))
    place = until(chat, of_type("queue"))  # in the queue, with a place and a wait
    assert place["position"] == 1 and place["waitSeconds"] == 0  # 3 agents, all free
    chat.__exit__(None, None, None)  # the tab closed: no more heartbeats
    runtime = client.app.app.state.runtime  # type: ignore[attr-defined]
    grace = runtime.settings.chat_grace_s * 1000
    soon = int(time.time() * 1000) + 1000
    assert client.portal.call(partial(runtime.chat.sweep, now_ms=soon)) == []  # not yet
    later = int(time.time() * 1000) + grace + 1000
    [moved] = client.portal.call(partial(runtime.chat.sweep, now_ms=later))
    assert (moved.id, moved.state) == (cid, "abandoned")
    assert client.portal.call(partial(runtime.chat.sweep, now_ms=later)) == []  # once
    got = client.get(f"/v1/interactions/{cid}", headers=KEY).json()
    assert got["status"] == "abandoned"
