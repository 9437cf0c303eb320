"""The agent workspace in real headless Chromium against the real server: signing in (and a
wrong password), presence, hostile visitor names and texts shown as text, a clean console,
and a usable desk at phone width.

Users are made with the real CLI (`opportune users add`) on the server's database; the chat
shown is stored through the conversation store, as the server's hub stores it. The full
visitor ↔ agent loop over the sockets is the lead's test (issue 14).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from opportune.core.actionmaps import in_holdout
from opportune.core.conversations import draft
from opportune.store import conversations as chats
from opportune.store.db import make_engine

pytestmark = pytest.mark.e2e

PASSWORD = "desk e2e password"
SITE_KEY = "demo-site-key"
HOSTILE_NAME = "<img src=x onerror=window.__pwned=1>"
HOSTILE_TEXT = "<script>window.__pwned=2</script><img src=x onerror=window.__pwned=3>"
# Until the agent socket (api/desk_socket.py) is merged, the desk's handshake to /agent/ws
# is refused and Chromium logs it; that, and only that, is not this page's error.
SOCKET_BUILT = any(
    importlib.util.find_spec(f"opportune.api.{m}") is not None
    for m in ("desk_socket", "agent_socket")
)


@dataclass
class Desk:
    email: str
    agent: str
    conversation: str


def _cli(server: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    tmp = server.log.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPPORTUNE_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "opportune.cli",
            *args,
            "--data-dir",
            str(tmp / "data"),
            "--workspace",
            str(tmp / "workspace"),
        ],
        input=stdin,
        text=True,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )


def _add_user(server: Any, email: str, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _cli(
        server,
        "users",
        "add",
        "--email",
        email,
        "--name",
        name,
        *args,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )


@pytest.fixture(scope="module")
def desk(server: Any) -> Iterator[Desk]:
    """Agent `carla` (loans and support) as a user, with an active support chat from a
    hostile visitor; offline again at the end, so later tests find no agent there."""
    email = f"carla-{secrets.token_hex(3)}@desk.test"
    made = _add_user(server, email, "Carla", "--role", "agent", "--agent", "carla")
    assert made.returncode == 0, made.stderr
    again = _add_user(server, email, "Carla", "--role", "agent", "--agent", "carla")
    assert again.returncode == 1
    assert again.stderr.strip() == "error: email: already taken by another user"
    engine = make_engine(f"sqlite:///{server.log.parent / 'data' / 'opportune.db'}")
    cid = f"c-desk-{secrets.token_hex(4)}"
    now = int(time.time() * 1000)
    with engine.begin() as conn:
        chats.open_conversation(
            conn,
            conversation_id=cid,
            site_id="demo",
            visitor_id="v-desk-e2e",
            customer_id=None,
            state="queued",
            now_ms=now,
            queue="support",
            language="en",
            registration={"name": HOSTILE_NAME},
        )
        chats.append(conn, cid, draft("v1", "visitor", HOSTILE_TEXT), now_ms=now)
        chats.append(conn, cid, draft("b1", "bot", "Let me find a person for you."), now_ms=now)
        chats.transition(conn, cid, "route", now_ms=now, agent_id="carla")
        chats.transition(conn, cid, "accept", now_ms=now)
        chats.append(
            conn, cid, draft("a1", "agent", "Hello, Carla here."), now_ms=now, author="carla"
        )
    engine.dispose()
    yield Desk(email, "carla", cid)
    with httpx.Client(base_url=server.base, timeout=10) as http:
        _presence_over_rest(http, email, "offline")


def _presence_over_rest(http: httpx.Client, email: str, presence: str) -> None:
    """Sign in through the form as a browser would, then set presence over the REST path."""
    form = http.get("/agent/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    r = http.post("/agent/login", data={"csrf": token, "email": email, "password": PASSWORD})
    assert r.status_code == 303, r.text
    page = http.get("/agent").text
    csrf = re.search(r'"csrf": "([^"]+)"', page).group(1)  # type: ignore[union-attr]
    r = http.post(
        "/agent/api/presence", json={"presence": presence}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200, r.text


def _page(browser: Any, server: Any, **context: Any) -> tuple[Any, Any, list[str]]:
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    problems: list[str] = []

    def on_console(msg: Any) -> None:
        if msg.type not in ("error", "warning"):
            return
        if not SOCKET_BUILT and "/agent/ws" in msg.text:
            return
        problems.append(f"{msg.type}: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    return ctx, page, problems


def _sign_in(page: Any, server: Any, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{server.base}/agent")  # not signed in: sent to the sign-in form
    page.wait_for_url("**/agent/login?next=%2Fagent")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_sign_in_presence_and_hostile_text(browser: Any, server: Any, desk: Desk) -> None:
    ctx, page, problems = _page(browser, server)
    try:
        _sign_in(page, server, desk.email, "not the password")
        error = page.locator("#password-error")
        assert error.text_content() == "Wrong email or password."
        assert page.input_value("#email") == desk.email
        # Chromium logs the deliberate 401 of that page; from here on nothing may be logged.
        problems.clear()
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{server.base}/agent")
        assert page.text_content("#me-name") == "Carla Rossi"

        # The hostile visitor's chat: every name and text is text, nothing ran.
        page.locator(f"#chat-list button[data-conversation='{desk.conversation}']").click()
        transcript = page.locator("#transcript")
        transcript.locator(".msg.visitor .text").first.wait_for()
        assert transcript.locator(".msg.visitor .text").first.text_content() == HOSTILE_TEXT
        assert page.text_content("#chat-title") == HOSTILE_NAME
        assert page.locator("#transcript img, #chat-title img, #chat-list img").count() == 0
        assert page.locator("#transcript script").count() == 0
        assert page.evaluate("window.__pwned") is None
        assert transcript.locator(".msg.agent .who").first.text_content() == "You"
        assert page.is_visible("#composer") and page.is_visible("#end-chat")

        # Presence: chosen in the header, seen by the routing engine.
        page.select_option("#presence", "available")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            agents = {a["id"]: a for a in server.api("/v1/agents")["items"]}
            if agents["carla"]["presence"] == "available":
                break
            time.sleep(0.1)
        assert agents["carla"]["presence"] == "available"
        assert page.get_attribute("#presence-dot", "data-presence") == "available"

        # Canned responses of the chat's queue and language fill the text box.
        options = page.locator("#canned option").all_text_contents()
        assert "Activation steps" in options and "Saludo" not in options
        page.select_option("#canned", label="Anything else")
        assert page.input_value("#message") == "Is there anything else I can help you with today?"
        if SOCKET_BUILT:
            page.wait_for_selector("#conn-status[data-state='online']")
        page.wait_for_timeout(300)  # anything late (a failed script, a CSP report) shows
        assert problems == []
    finally:
        ctx.close()


def test_the_desk_is_usable_at_phone_width(browser: Any, server: Any, desk: Desk) -> None:
    ctx, page, problems = _page(
        browser, server, viewport={"width": 390, "height": 780}, is_mobile=True, has_touch=True
    )
    try:
        _sign_in(page, server, desk.email)
        page.wait_for_url(f"{server.base}/agent")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways: {width}px"
        # The chat list is folded away behind its button; the open chat fills the screen.
        toggle = page.locator("#toggle-chats")
        assert toggle.is_visible()
        column = page.locator("#chat-column")
        assert column.bounding_box()["x"] + column.bounding_box()["width"] <= 0
        toggle.click()
        page.wait_for_function(
            "() => document.getElementById('chat-column').getBoundingClientRect().left >= 0"
        )
        assert toggle.get_attribute("aria-expanded") == "true"
        page.locator(f"#chat-list button[data-conversation='{desk.conversation}']").click()
        page.wait_for_function("() => !document.body.classList.contains('chats-open')")
        composer = page.locator("#message").bounding_box()
        assert composer["x"] >= 0 and composer["x"] + composer["width"] <= 390
        page.fill("#message", "typed on a phone")
        send = page.locator("#send").bounding_box()
        assert send["x"] + send["width"] <= 390 and send["y"] + send["height"] <= 780
        assert page.is_visible("#presence") and page.is_visible(".logout button")
        # The context panel is a drawer too, opened from the chat's header.
        context = page.locator("#context")
        assert context.bounding_box()["x"] >= 390
        page.click("#toggle-context")
        page.wait_for_function(
            "() => document.getElementById('context').getBoundingClientRect().right <= 390"
        )
        assert page.locator("#context img").count() == 0
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert problems == []
    finally:
        ctx.close()


def test_a_supervisor_watches_read_only(browser: Any, server: Any, desk: Desk) -> None:
    email = f"sue-{secrets.token_hex(3)}@desk.test"
    made = _add_user(server, email, "<b>Sue</b>", "--role", "supervisor", "--queues", "support")
    assert made.returncode == 0, made.stderr
    ctx, page, problems = _page(browser, server)
    try:
        _sign_in(page, server, email)
        page.wait_for_url(f"{server.base}/agent")
        assert page.text_content("#me-name") == "<b>Sue</b>"
        assert not page.is_visible("#presence")  # a supervisor has no presence
        item = page.locator(f"#monitor-list button[data-conversation='{desk.conversation}']")
        item.click()
        page.locator("#transcript .msg.visitor .text").first.wait_for()
        assert page.locator("#transcript .msg.visitor .text").first.text_content() == HOSTILE_TEXT
        # Carla's own words are labelled with her name, and nothing here can write.
        assert page.locator("#transcript .msg.agent .who").first.text_content() == "Carla Rossi"
        assert page.is_visible("#read-only-note")
        for control in ("#composer", "#end-chat", "#transfer-open", "#wrapup-form"):
            assert not page.is_visible(control), control
        assert page.evaluate("window.__pwned") is None
        assert problems == []
    finally:
        ctx.close()


class Visitor:
    """A visitor scripted over the real endpoints: events until the chat is offered, then
    the chat socket (`/v1/chat`), as the widget speaks it."""

    def __init__(self, server: Any) -> None:
        self.base, self.origin = server.base, server.base
        self.vid = next(
            v
            for v in (f"desk-{secrets.token_hex(4)}" for _ in range(100))
            if not in_holdout(v, "loan-struggle-chat", 0.1)
        )
        self.n = 0
        self.ws: Any = None
        self.closing = contextlib.ExitStack()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(f"{self.base}{path}", json=body, headers={"origin": self.origin}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def events(self, *events: dict[str, Any]) -> dict[str, Any]:
        t = int(time.time() * 1000)
        evs = []
        for e in events:
            self.n += 1
            evs.append({"id": f"{self.vid}-{self.n}", "ts": t, **e})
        body = {"siteKey": SITE_KEY, "visitorId": self.vid, "sentAt": t, "events": evs}
        return self._post("/v1/events", body)

    def open_chat(self) -> str:
        """Struggle on the loan form until the chat is offered, accept it, open the socket."""
        apply = f"{self.base}/demo/apply.html"
        self.events({"type": "page_view", "url": apply})
        err = {"type": "form_error", "name": "loan", "url": apply}
        offers = self.events(err, err)["actions"]
        assert [o["type"] for o in offers] == ["chat"], offers
        t = int(time.time() * 1000)
        oid, form = offers[0]["id"], {"firstName": HOSTILE_NAME}
        reports = [
            {"id": oid, "state": "accepted", "ts": t},
            {"id": oid, "state": "started", "ts": t, "form": form},
        ]
        body = {"siteKey": SITE_KEY, "visitorId": self.vid, "sentAt": t, "reports": reports}
        assert self._post("/v1/actions", body)["accepted"] == 2
        url = self.base.replace("http", "ws", 1) + f"/v1/chat?siteKey={SITE_KEY}"
        socket = connect(url, additional_headers={"Origin": self.origin}, open_timeout=10)
        self.ws = self.closing.enter_context(socket)
        self.send(type="start", visitorId=self.vid, action=oid, form=form, locale="en")
        started = self.until("started")
        return str(started["conversation"])

    def send(self, **frame: Any) -> None:
        self.ws.send(json.dumps(frame))

    def until(self, kind: str, test: Any = None, limit: int = 60) -> dict[str, Any]:
        for _ in range(limit):
            f = json.loads(self.ws.recv(timeout=15))
            if f.get("type") == kind and (test is None or test(f)):
                return f
        raise AssertionError(f"no {kind} frame")


def test_the_desk_takes_a_routed_chat_to_its_wrap_up_code(
    browser: Any, server: Any, desk: Desk
) -> None:
    ctx, page, problems = _page(browser, server)
    visitor = Visitor(server)
    try:
        _sign_in(page, server, desk.email)
        page.wait_for_url(f"{server.base}/agent")
        page.wait_for_selector("#conn-status[data-state='online']")
        page.select_option("#presence", "available")
        page.wait_for_function(
            "() => document.getElementById('presence-dot').dataset.presence === 'available'"
        )
        cid = visitor.open_chat()
        visitor.send(type="escalate")
        # The incoming-chat alert: the visitor's name as text, then Accept.
        banner = page.locator("#offer-banner")
        banner.wait_for(state="visible")
        assert banner.get_attribute("data-conversation") == cid
        assert HOSTILE_NAME in (page.text_content("#offer-text") or "")
        page.click("#offer-accept")
        visitor.until("state", lambda f: f["state"] == "active")
        page.wait_for_selector(f"#chat-list button[data-conversation='{cid}']")
        assert page.text_content("#chat-title") == HOSTILE_NAME
        # The bot's part arrived with the chat; the visitor's hostile words stay words.
        visitor.send(type="message", id="v-hostile", text=HOSTILE_TEXT)
        visitor.until("ack", lambda f: f["id"] == "v-hostile")
        mine = page.locator("#transcript .msg.visitor .text", has_text="onerror")
        mine.wait_for()
        assert mine.text_content() == HOSTILE_TEXT and page.evaluate("window.__pwned") is None
        visitor.send(type="typing")
        page.wait_for_selector("#typing", state="visible")
        page.fill("#message", "Hello, Carla here: how can I help?")
        page.press("#message", "Enter")
        got = visitor.until("message", lambda f: f["message"]["sender"] == "agent")
        assert got["message"]["text"] == "Hello, Carla here: how can I help?"
        visitor.send(type="read", seq=got["message"]["seq"])
        page.wait_for_selector("#transcript .msg.agent:not(.pending) .mark:text-is(' · Read')")
        seqs = page.eval_on_selector_all("#transcript .msg", "ns => ns.map(n => n.dataset.seq)")
        # A reload restores the chat from the server: every message once, in order.
        page.reload()
        page.locator(f"#chat-list button[data-conversation='{cid}']").click()
        page.wait_for_function(
            f"() => document.querySelectorAll('#transcript .msg').length >= {len(seqs)}"
        )
        page.wait_for_timeout(500)  # a double would arrive by now
        again = page.eval_on_selector_all("#transcript .msg", "ns => ns.map(n => n.dataset.seq)")
        assert again == seqs and len(set(seqs)) == len(seqs)
        # End (two clicks), then the wrap-up form: no code, no closing.
        page.click("#end-chat")
        page.click("#end-chat")
        page.wait_for_selector("#wrapup-form", state="visible")
        page.click("#wrapup-submit")
        assert page.is_visible("#wrapup-error")
        page.select_option("#wrapup-code", "loan-sold")
        page.fill("#wrapup-notes", "Wants 10k over 5 years")
        page.click("#wrapup-submit")
        page.wait_for_selector(f"#chat-list button[data-conversation='{cid}']", state="detached")
        interaction = server.api(f"/v1/interactions/{cid}")
        assert interaction["status"] == "ended" and interaction["wrapUpCode"] == "loan-sold"
        assert problems == []
    finally:
        visitor.closing.close()
        ctx.close()
