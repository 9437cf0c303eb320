"""The widget's chat, in real headless Chromium, against the real server and its `/v1/chat`.

Nothing is answered in the server's stead: the server decides to offer the demo's
help-centre bot (a visitor idle on the help centre), the widget opens it and talks over the
server's socket. The test observes the socket's frames (Playwright's `framesent` /
`framereceived`) beside what is on screen, inside the widget's open shadow root. One test
puts a pass-through route on the socket so that it can cut the line; one signs an agent of
the example workspace in on the desk socket (`/agent/ws`), with a user made in the store.

Tests that need the server's chat socket are skipped, naming it, when the server does not
speak WebSocket at `/v1/chat`; the look of the demo's widget (its site config) does not.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

SITE_KEY = "demo-site-key"
BOT_TITLE = "Opportune Bank assistant"
HOSTILE = '<img src=x onerror="window.__xss = 1">'


def init_first(**options: Any) -> str:
    """An init script queueing `init` with these options before the page's own (ignored)."""
    opts = {"siteKey": SITE_KEY, "endpoint": "/v1/events", **options}
    return (
        "window.opportune = function () { (window.opportune.q = window.opportune.q || [])"
        f".push(arguments); }}; window.opportune('init', {json.dumps(opts)});"
    )


@dataclass
class Frames:
    """Every frame of the page's chat sockets, both ways, in order, parsed."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    closes: list[Any] = field(default_factory=list)
    sockets: int = 0

    down: bool = False  # proxied: the "network" refuses new sockets
    routes: list[Any] = field(default_factory=list)

    def proxy(self, page: Any) -> Frames:
        """Records through a pass-through route instead (the test can then drop the line)."""

        def route(ws: Any) -> None:
            if self.down:
                ws.close(code=1013, reason="try again later")
                return
            self.sockets += 1
            self.routes.append(ws)
            to_server = ws.connect_to_server()

            def up(message: str | bytes) -> None:
                self.sent.append(json.loads(message))
                to_server.send(message)

            def down(message: str | bytes) -> None:
                self.received.append(json.loads(message))
                ws.send(message)

            ws.on_message(up)
            to_server.on_message(down)

        page.route_web_socket(re.compile(r".*/v1/chat\b.*"), route)
        return self

    def drop(self) -> None:
        """The line goes down: open sockets are cut, new ones refused, until ``down`` is unset."""
        self.down = True
        for ws in self.routes:
            ws.close(code=1012, reason="gone")
        self.closes.extend(self.routes)
        self.routes.clear()

    def attach(self, page: Any) -> Frames:
        def on_socket(ws: Any) -> None:
            if "/v1/chat" not in ws.url:
                return
            self.sockets += 1
            ws.on("framesent", lambda payload: self.sent.append(json.loads(payload)))
            ws.on("framereceived", lambda payload: self.received.append(json.loads(payload)))
            ws.on("close", lambda _ws: self.closes.append(ws.url))

        page.on("websocket", on_socket)
        return self

    def of(self, kind: str, which: str = "received") -> list[dict[str, Any]]:
        return [f for f in getattr(self, which) if f.get("type") == kind]

    def messages(self) -> list[dict[str, Any]]:
        return [f["message"] for f in self.of("message")]

    def ack(self, message_id: str) -> dict[str, Any] | None:
        return next((f for f in self.of("ack") if f.get("id") == message_id), None)


def wait_until(page: Any, check: Callable[[], Any], timeout: float = 15, what: str = "") -> Any:
    """Poll with the page's timer (Playwright runs its event callbacks inside its calls)."""
    waited = 0.0
    while True:
        value = check()
        if value:
            return value
        if waited > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(100)
        waited += 0.1


@dataclass
class Visitor:
    page: Any
    frames: Frames
    errors: list[str]

    def window(self) -> Any:
        return self.page.get_by_role("complementary", name=BOT_TITLE)

    def bubbles(self) -> list[str]:
        """The texts of the message list, in order (the sender's name included)."""
        return list(self.window().locator(".log .b").all_text_contents())

    def say(self, text: str) -> dict[str, Any]:
        """Type ``text`` (Shift+Enter for its new lines) and press Enter; the frame sent."""
        box = self.window().get_by_role("textbox", name="Your message")
        box.focus()
        for i, line in enumerate(text.split("\n")):
            if i:
                self.page.keyboard.press("Shift+Enter")
            self.page.keyboard.type(line)
        before = len(self.frames.of("message", "sent"))
        self.page.keyboard.press("Enter")
        return dict(
            wait_until(
                self.page,
                lambda: self.frames.of("message", "sent")[before:],
                what="the message frame",
            )[0]
        )

    def acked(self, message_id: str) -> dict[str, Any]:
        return dict(
            wait_until(self.page, lambda: self.frames.ack(message_id), what=f"ack of {message_id}")
        )


@pytest.fixture(scope="module")
def chat_socket(server: Any, browser: Any) -> None:
    """Skips when the server has no `/v1/chat` socket (a browser tries one)."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.base}/healthz")
    opened = page.evaluate(
        """(url) => new Promise((done) => {
          const ws = new WebSocket(url);
          ws.onopen = () => { ws.close(); done(true); };
          ws.onerror = () => done(false);
        })""",
        server.base.replace("http", "ws", 1) + f"/v1/chat?siteKey={SITE_KEY}",
    )
    context.close()
    if not opened:
        pytest.skip("needs the server's WebSocket /v1/chat (docs/conversations.md)")


@pytest.fixture
def visitor(browser: Any, server: Any) -> Iterator[Callable[..., Visitor]]:
    """A new visitor idle on the help centre, offered the demo's bot by the real server."""
    contexts: list[Any] = []

    def start(proxy: bool = False, **context_options: Any) -> Visitor:
        options = {"viewport": {"width": 1280, "height": 800}, "locale": "en-GB"}
        context = browser.new_context(**{**options, **context_options})
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.add_init_script(init_first(idleSeconds=1))
        frames = Frames().proxy(page) if proxy else Frames().attach(page)
        page.goto(f"{server.base}/demo/help.html")
        v = Visitor(page, frames, errors)
        v.window().wait_for(timeout=30000)  # idle, then the server's next answer offers it
        wait_until(page, lambda: frames.of("started"), what="the server's `started`")
        return v

    yield start
    for c in contexts:
        c.close()


def test_a_visitors_chat_goes_out_is_acked_and_shows_text_as_text(
    chat_socket: None, visitor: Callable[..., Visitor]
) -> None:
    v = visitor()
    page, frames = v.page, v.frames
    (start,) = frames.of("start", "sent")
    assert start["visitorId"] and start["action"].startswith("ai_") and start["locale"] == "en"
    assert frames.of("started")[0]["conversation"]

    # The bot's buttons are buttons; a press is a message with the button's value.
    bot = wait_until(
        page,
        lambda: [m for m in frames.messages() if (m.get("payload") or {}).get("buttons")],
        what="a bot message with buttons",
    )[0]
    button = bot["payload"]["buttons"][0]
    v.window().get_by_role("button", name=button["label"], exact=True).first.click()
    sent = wait_until(
        page, lambda: [f for f in frames.of("message", "sent") if "choice" in f], what="a choice"
    )[0]
    value = button["label"] if button.get("value") is None else str(button["value"])
    assert sent["text"] == button["label"] and sent["choice"] == value
    assert v.acked(sent["id"])["duplicate"] is False
    # Once the bot has answered, a person is always one press away.
    assert v.window().get_by_role("button", name="Talk to an adviser").is_visible()

    # Typing is said (throttled); hostile text goes out as typed and is shown as text.
    typed_before = len(frames.of("typing", "sent"))
    sent = v.say(f"Hello {HOSTILE}\nsecond line")
    assert sent["text"] == f"Hello {HOSTILE}\nsecond line"
    assert re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", sent["id"])
    assert len(frames.of("typing", "sent")) > typed_before
    ack = v.acked(sent["id"])
    assert ack["duplicate"] is False and ack["seq"] > 0
    mine = v.window().locator(".log .b.visitor").last
    wait_until(page, lambda: "Sending" not in mine.text_content(), what="the bubble acked")
    assert mine.locator("p").text_content() == f"Hello {HOSTILE}\nsecond line"
    assert v.window().locator(".log img").count() == 0
    assert page.evaluate("window.__xss") is None
    # Read receipts go out for what is shown; a heartbeat is not needed in 20 s of test.
    assert frames.of("read", "sent")
    assert v.errors == []


def settle(v: Visitor) -> None:
    """Wait until the server has said everything it will (no new message for 1 s)."""
    count = -1
    while count != len(v.frames.messages()):
        count = len(v.frames.messages())
        v.page.wait_for_timeout(1000)


def seqs_shown(v: Visitor) -> list[int]:
    """The seqs of the bubbles in the message list, in screen order."""
    return [
        int(s)
        for s in v.window()
        .locator(".log .b[data-seq]")
        .evaluate_all("els => els.map((e) => e.getAttribute('data-seq'))")
    ]


def seqs_stored(v: Visitor) -> set[int]:
    """Every seq the server has told this visitor of (its messages and its acks)."""
    return {m["seq"] for m in v.frames.messages()} | {a["seq"] for a in v.frames.of("ack")}


def test_a_reload_or_another_page_resumes_without_loss_or_doubles(
    chat_socket: None, visitor: Callable[..., Visitor], server: Any
) -> None:
    v = visitor()
    page, frames = v.page, v.frames
    for text in ("message 1", HOSTILE):
        v.acked(v.say(text)["id"])
    settle(v)
    before = v.bubbles()
    assert before.count("You: message 1") == 1 and before.count(f"You: {HOSTILE}") == 1
    assert seqs_shown(v) == sorted(seqs_stored(v))
    seen = max(m["seq"] for m in frames.messages())
    conversation = frames.of("started")[0]["conversation"]

    page.reload()
    v.window().wait_for()
    resume = wait_until(page, lambda: frames.of("resume", "sent"), what="a resume")[0]
    assert resume["conversation"] == conversation and resume["after"] >= seen
    assert resume["visitorId"] == frames.of("start", "sent")[0]["visitorId"]
    assert len(frames.of("start", "sent")) == 1  # not a second conversation
    wait_until(page, lambda: len(frames.of("started")) == 2, what="resumed")
    settle(v)
    assert v.bubbles()[: len(before)] == before  # nothing lost, in the same order
    shown = seqs_shown(v)
    assert shown == sorted(set(shown)) == sorted(seqs_stored(v))  # each once, in seq order
    assert v.window().locator(".log img").count() == 0  # shown again as text, from storage
    assert page.evaluate("window.__xss") is None

    # Another page of the site: the snippet loads the widget for the chat in progress.
    page.goto(f"{server.base}/demo/index.html")
    v.window().wait_for()
    wait_until(page, lambda: len(frames.of("resume", "sent")) == 2, what="a second resume")
    sent = v.say("after the move")
    assert v.acked(sent["id"])["duplicate"] is False
    settle(v)
    assert v.bubbles()[: len(before)] == before
    shown = seqs_shown(v)
    assert shown == sorted(set(shown)) == sorted(seqs_stored(v))
    assert v.bubbles().count("You: after the move") == 1
    assert v.errors == []


def test_a_message_typed_while_the_line_is_down_is_sent_once_it_is_back(
    chat_socket: None, visitor: Callable[..., Visitor]
) -> None:
    v = visitor(proxy=True)
    page, frames = v.page, v.frames
    frames.drop()
    v.window().get_by_text("Connection lost. Reconnecting…").wait_for()
    box = v.window().get_by_role("textbox", name="Your message")
    box.fill("typed while the line is down")
    box.press("Enter")
    bubble = v.window().locator(".log .b.visitor").last
    assert "Sending…" in bubble.text_content()
    stored = page.evaluate(f"JSON.parse(sessionStorage.getItem('opp_chat:{SITE_KEY}')).outbox")
    assert [o["text"] for o in stored] == ["typed while the line is down"]
    frames.down = False
    sent = wait_until(
        page,
        lambda: [f for f in frames.sent if f.get("text") == "typed while the line is down"],
        timeout=40,
        what="the outbox sent after reconnecting",
    )
    assert frames.of("resume", "sent")  # the same conversation, resumed
    assert v.acked(sent[0]["id"])["duplicate"] is False
    wait_until(page, lambda: "Sending" not in bubble.text_content(), what="the bubble acked")
    assert v.window().get_by_text("Connection lost. Reconnecting…").count() == 0


def test_end_then_rate(chat_socket: None, visitor: Callable[..., Visitor]) -> None:
    v = visitor()
    page, frames = v.page, v.frames
    v.window().get_by_role("button", name="End chat").click()
    wait_until(page, lambda: frames.of("end", "sent"), what="`end`")
    v.window().get_by_role("status").get_by_text("The chat has ended.").wait_for()
    assert v.window().get_by_role("textbox", name="Your message").count() == 0 or not (
        v.window().get_by_role("textbox", name="Your message").is_visible()
    )
    group = v.window().get_by_role("group", name="How did we do?")  # the site's words
    group.get_by_role("button", name="4 of 5").click()
    wait_until(page, lambda: frames.of("rate", "sent"), what="`rate`")
    assert frames.of("rate", "sent")[0]["rating"] == 4
    v.window().get_by_text("Thank you for your rating.").wait_for()
    assert page.evaluate(f"sessionStorage.getItem('opp_chat:{SITE_KEY}')") is None
    assert v.errors == []


def test_on_a_phone_the_chat_is_a_bottom_sheet_usable_with_the_keyboard(
    chat_socket: None, visitor: Callable[..., Visitor]
) -> None:
    v = visitor(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    panel = v.window()
    panel.evaluate("el => Promise.all(el.getAnimations().map(a => a.finished))")
    box = panel.bounding_box()
    assert (box["x"], box["width"]) == (0, 390) and abs(box["y"] + box["height"] - 844) < 1
    textbox = panel.get_by_role("textbox", name="Your message")
    send = panel.get_by_role("button", name="Send")
    for control in (textbox, send):
        b = control.bounding_box()
        assert b["y"] + b["height"] <= 844 and b["height"] >= 44
    textbox.focus()
    v.page.keyboard.press("Tab")
    assert send.evaluate("el => el.getRootNode().activeElement === el")


def test_the_demo_widget_wears_the_banks_look(server: Any, browser: Any) -> None:
    """The site's config (sites.yaml `widget`) reaches the widget: colours, logo, name."""
    config = httpx.get(f"{server.base}/v1/widget", params={"siteKey": SITE_KEY}).json()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.add_init_script(init_first(idleSeconds=1))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.base}/demo/help.html")
    window = page.get_by_role("complementary", name=BOT_TITLE)
    window.wait_for(timeout=30000)
    looks = window.evaluate(
        """el => { const root = el.closest('.root'), logo = el.querySelector('img.logo');
          const send = [...el.querySelectorAll('button')].find((b) => b.textContent === 'Send');
          return {primary: getComputedStyle(root).getPropertyValue('--p').trim(),
                  button: getComputedStyle(send).backgroundColor,
                  text: getComputedStyle(el).color, name: el.querySelector('.nm').textContent,
                  logo: logo.src, loaded: logo.complete && logo.naturalWidth > 0}; }"""
    )
    assert looks["primary"] == config["theme"]["primary"] == "#0b6e4f"  # the bank's green
    assert looks["button"] == "rgb(11, 110, 79)"
    assert looks["text"] == "rgb(20, 33, 61)"  # the bank's ink
    assert looks["name"] == "Opportune Bank"
    assert looks["logo"] == f"{server.base}/demo/logo.svg" and looks["loaded"]
    assert errors == []
    context.close()

    # init's own theme still wins over the site's.
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.add_init_script(init_first(idleSeconds=1, theme={"primary": "#7b1fa2"}))
    page.goto(f"{server.base}/demo/help.html")
    window = page.get_by_role("complementary", name=BOT_TITLE)
    window.wait_for(timeout=30000)
    primary = window.evaluate(
        "el => getComputedStyle(el.closest('.root')).getPropertyValue('--p').trim()"
    )
    assert primary == "#7b1fa2"
    context.close()


def test_the_chat_window_speaks_spanish(server: Any, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="es-ES")
    page = context.new_page()
    page.add_init_script(init_first(idleSeconds=1, locale="es"))
    page.goto(f"{server.base}/demo/help.html")
    window = page.locator("opportune-widget").get_by_role("complementary")
    window.wait_for(timeout=30000)
    assert window.get_by_role("textbox", name="Su mensaje").is_visible()
    assert window.get_by_role("button", name="Enviar").is_visible()
    assert window.get_by_role("button", name="Terminar chat").is_visible()
    assert window.get_by_role("button", name="Cerrar").is_visible()
    assert window.evaluate("el => el.closest('.root').lang") == "es"
    context.close()


def test_talk_to_a_person_queues_the_chat_with_its_place_and_wait(
    chat_socket: None, visitor: Callable[..., Visitor]
) -> None:
    v = visitor()
    page, frames = v.page, v.frames
    wait_until(page, lambda: [m for m in frames.messages() if m["sender"] == "bot"], what="the bot")
    talk = v.window().get_by_role("button", name="Talk to an adviser")  # the site's words
    talk.click()
    wait_until(page, lambda: frames.of("escalate", "sent"), what="`escalate`")
    wait_until(
        page,
        lambda: [f for f in frames.of("state") if f["state"] == "queued"],
        what="the chat queued",
    )
    status = v.window().get_by_role("status")
    status.get_by_text("You’re in the queue — an agent will be with you shortly").wait_for()
    assert not talk.is_visible()  # asked once: the bot no longer has the chat
    queue = wait_until(page, lambda: frames.of("queue"), what="a `queue` frame")[-1]
    line = f"You are number {queue['position']} in the queue."
    if queue["waitSeconds"] is not None:
        w = queue["waitSeconds"]
        line += (
            " Expected wait: under a minute."
            if w < 60
            else f" Expected wait: about {math.floor(w / 60 + 0.5)} min."  # JS Math.round
        )
    wait_until(
        page,
        lambda: v.window().locator(".q").first.text_content() == line,
        what=f"the queue line {line!r}",
    )
    # Ended, so no agent of a later test is offered a chat nobody is at.
    v.window().get_by_role("button", name="End chat").click()
    wait_until(page, lambda: frames.of("end", "sent"), what="`end`")
    assert v.errors == []


@dataclass
class Desk:
    """An agent signed in on the real desk socket (`/agent/ws`), as the agent workspace is."""

    ws: Any

    def send(self, **frame: Any) -> None:
        self.ws.send(json.dumps(frame))

    def until(self, page: Any, test: Callable[[dict[str, Any]], bool], what: str) -> Any:
        """Read the desk's frames until one passes ``test`` (the page's timer keeps going)."""
        for _ in range(300):
            try:
                frame = json.loads(self.ws.recv(timeout=0.1))
            except TimeoutError:
                page.wait_for_timeout(50)
                continue
            if test(frame):
                return frame
        pytest.fail(f"the desk never got {what}")


@pytest.fixture
def desk(server: Any) -> Iterator[Callable[[str], Desk]]:
    """An agent of the example workspace, signed in (a user and session made in the store)."""
    from websockets.sync.client import connect

    from opportune.store import users
    from opportune.store.db import make_engine

    opened: list[Any] = []
    stack = contextlib.ExitStack()

    def sign_in(agent: str) -> Desk:
        engine = make_engine(f"sqlite:///{(server.log.parent / 'data/opportune.db').resolve()}")
        now = int(time.time() * 1000)
        with engine.begin() as conn:
            user = users.create_user(
                conn,
                email=f"{agent}.{now}@bank.example",
                name=agent.title(),
                role="agent",
                password="correct horse battery",
                now_ms=now,
                agent_id=agent,
            )
            token, _ = users.start_session(conn, user, now_ms=now)
        engine.dispose()
        ws = stack.enter_context(
            connect(
                server.base.replace("http", "ws", 1) + "/agent/ws",
                origin=server.base,
                additional_headers={"Cookie": f"opportune_session={token}"},
                proxy=None,
            )
        )
        opened.append(ws)
        return Desk(ws)

    with stack:
        yield sign_in
        for ws in opened:  # no agent left available for the tests after this one
            with contextlib.suppress(Exception):
                ws.send(json.dumps({"type": "presence", "presence": "offline"}))


def test_an_agent_answers_by_name_with_typing_and_read_and_their_text_is_text(
    chat_socket: None, visitor: Callable[..., Visitor], desk: Callable[[str], Desk]
) -> None:
    v = visitor()
    page, frames = v.page, v.frames
    agent = desk("dev")  # cards: the help bot hands over to `support`, where Dev works
    agent.until(page, lambda f: f["type"] == "hello", "hello")
    agent.send(type="presence", presence="available")
    mine = v.say("My card is blocked")
    v.acked(mine["id"])
    v.window().get_by_role("button", name="Talk to an adviser").click()
    conversation = frames.of("started")[0]["conversation"]
    agent.until(
        page,
        lambda f: f["type"] == "offer" and f["conversation"]["id"] == conversation,
        "the chat offered",
    )
    agent.send(type="accept", conversation=conversation)
    joined = wait_until(
        page, lambda: [f for f in frames.of("state") if f.get("agent")], what="the agent named"
    )[-1]
    name = joined["agent"]["name"]
    v.window().get_by_role("status").get_by_text(f"{name} has joined the chat.").wait_for()

    agent.send(type="typing", conversation=conversation)
    v.window().get_by_text(f"{name} is typing…").wait_for()
    agent.send(type="message", conversation=conversation, id="a-1", text=f"Hi {HOSTILE}")
    bubble = v.window().locator(".log .b.agent").last
    bubble.get_by_text(f"Hi {HOSTILE}").wait_for()
    assert bubble.locator(".who").text_content() == name
    assert v.window().locator(".log img").count() == 0
    assert page.evaluate("window.__xss") is None
    # The visitor's own read receipt went out for the agent's message.
    seq = max(m["seq"] for m in frames.messages())
    wait_until(page, lambda: [f for f in frames.of("read", "sent") if f["seq"] >= seq], what="read")

    # The agent reads the visitor's message: "Read" under it.
    agent.send(type="read", conversation=conversation, seq=v.acked(mine["id"])["seq"])
    visitor_bubble = v.window().locator(f".log .b[data-seq='{v.acked(mine['id'])['seq']}']")
    visitor_bubble.get_by_text("Read", exact=True).wait_for()

    agent.send(type="end", conversation=conversation)
    v.window().get_by_role("status").get_by_text("The chat has ended.").wait_for()
    v.window().get_by_role("group", name="How did we do?").wait_for()
    agent.send(type="wrapup", conversation=conversation, code="resolved")
    assert v.errors == []
