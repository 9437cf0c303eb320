"""Action maps deciding for real: the example workspace's maps, in real Chromium, against the
real server.

No request is intercepted or answered by the test: the server decides what to offer (or
not, and why), the widget it serves shows it, and what the visitor does with it goes back to
the server. Each test then
checks the three views of the same facts: what the browser received (the answers of
``POST /v1/events``, observed, not replaced), what is on screen (inside the widget's open
shadow root), and what the server recorded and would decide now
(``GET /v1/visitors/{id}/explain``: per map ``now`` and ``history``).

The example maps hold out 10% of qualifying visitors, by a hash of map and visitor id. So
that every run engages, each visitor's id is chosen outside the holdout of the maps the
test meets, and set as the snippet's ``opp_vid`` cookie before its first page.

Waits poll with deadlines; "nothing was offered" is asserted only once the snippet's outbox
is empty and the server answered every batch (its answer is its decision).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from opportune.core.actionmaps import in_holdout, instance_id

pytestmark = pytest.mark.e2e

SITE_KEY = "demo-site-key"
OUTBOX_KEY = f"opp_outbox:{SITE_KEY}"
HOLDOUT = 0.1  # holdoutPercent: 10 of the example maps

DEVICE = "device-activation-help"
DEVICE_TITLE = "Activate your device in three steps"
TRAVEL = "travel-notice"
TRAVEL_TITLE = "Travelling soon?"
CHAT = "loan-struggle-chat"
CHAT_TITLE = "Need a hand with your application?"
QUEUED = "You\u2019re in the queue — an agent will be with you shortly"

# The texts of the widget's shadow root: what the visitor sees (h2 is the offer's title).
WIDGET_TITLES = """() => [...document.querySelectorAll('opportune-widget')].map((host) => {
  const title = host.shadowRoot && host.shadowRoot.querySelector('h2');
  return title && title.textContent;
})"""


# The answers of the server to the snippet, kept as the page received them (in the tab's
# sessionStorage, so they outlive navigations). Observed, not changed: the wrapper hands the
# snippet the server's own response, after copying its body. Kept page-side so that once the
# outbox is empty, every answer to it is already in the log (Playwright's own response
# events may come later than that).
ANSWER_LOG = """
(() => {
  const send = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const response = await send(input, init);
    const path = new URL(String((input && input.url) || input), location.href).pathname;
    if (path.endsWith('/v1/events') || path.endsWith('/v1/recheck')) {
      let body;
      try { body = await response.clone().json(); } catch (e) { body = null; }
      const log = JSON.parse(sessionStorage.getItem('e2e-answers') || '[]');
      log.push({path: path, status: response.status, body: body});
      sessionStorage.setItem('e2e-answers', JSON.stringify(log));
    }
    return response;
  };
})();
"""


@dataclass
class Browsing:
    """What one tab received from the server: its answers (see ANSWER_LOG) and how often it
    downloaded the widget."""

    page: Any
    widget_requests: int = 0

    def attach(self) -> Browsing:
        def on_request(request: Any) -> None:
            if request.url.split("?")[0].endswith("/sdk/opportune-widget.js"):
                self.widget_requests += 1

        self.page.add_init_script(ANSWER_LOG)
        self.page.on("request", on_request)
        return self

    def log(self) -> list[dict[str, Any]]:
        log = self.page.evaluate("JSON.parse(sessionStorage.getItem('e2e-answers') || '[]')")
        for a in log:
            assert 200 <= a["status"] < 300 and a["body"] is not None, a
        return list(log)

    def answers(self) -> list[dict[str, Any]]:
        """The answers to ``POST /v1/events``, oldest first."""
        return [a["body"] for a in self.log() if a["path"].endswith("/v1/events")]

    def count(self) -> int:
        return len(self.log())

    def actions(self, since: int = 0) -> list[dict[str, Any]]:
        """The actions of every answer (events and rechecks) after the first ``since``."""
        return [a for entry in self.log()[since:] for a in entry["body"].get("actions", [])]


def wait_until(
    page: Any, check: Callable[[], Any], timeout: float = 15, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise.

    Waits with the page's timer: Playwright's sync API runs event callbacks (the widget
    requests counted above) only while the test is inside a Playwright call.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(100)


def drain(page: Any, timeout: float = 15) -> None:
    """Ask the snippet to send now and wait until the server acknowledged everything."""
    page.wait_for_function("() => window.opportune && window.opportune.loaded")
    page.evaluate("opportune('flush')")
    page.wait_for_function(
        f"() => localStorage.getItem({OUTBOX_KEY!r}) === null", timeout=timeout * 1000
    )


def settled(page: Any, seen: Browsing, count: int) -> dict[str, Any]:
    """Drain, then wait for an answer to ``POST /v1/events`` after the first ``count``
    entries of the log (those received before the visitor's last action); return the
    latest, the server's word on everything so far."""
    drain(page)

    def latest() -> dict[str, Any] | None:
        new = [a["body"] for a in seen.log()[count:] if a["path"].endswith("/v1/events")]
        return new[-1] if new else None

    return dict(wait_until(page, latest, what="an answer to /v1/events"))


def engaged_visitor(*maps: str) -> str:
    """A fresh visitor id (the snippet's form: 32 hex) outside the holdout of ``maps``."""
    while True:
        vid = uuid.uuid4().hex
        if not any(in_holdout(vid, m, HOLDOUT) for m in maps):
            return vid


def visitor_id(context: Any) -> str:
    ids = [c["value"] for c in context.cookies() if c["name"] == "opp_vid"]
    assert ids, "no opp_vid cookie"
    return str(ids[0])


def explain(server: Any, vid: str) -> dict[str, Any]:
    return dict(server.api(f"/v1/visitors/{vid}/explain"))


def explained(server: Any, vid: str, name: str) -> dict[str, Any]:
    maps = {m["name"]: m for m in explain(server, vid)["maps"]}
    assert name in maps, (name, sorted(maps))
    return dict(maps[name])


def explained_when(
    page: Any,
    server: Any,
    vid: str,
    name: str,
    test: Callable[[dict[str, Any]], bool],
    what: str,
) -> dict[str, Any]:
    """The explanation of map ``name``, polled until ``test`` holds of it."""
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        nonlocal last
        last = explained(server, vid, name)
        return last if test(last) else None

    try:
        return dict(wait_until(page, check, what=what))
    except pytest.fail.Exception:
        pytest.fail(f"timed out waiting for {what}; last explanation of {name}: {last}")


def states(m: dict[str, Any]) -> list[str]:
    return [h["state"] for h in m["history"]]


def widget_titles(page: Any) -> list[str]:
    return list(page.evaluate(WIDGET_TITLES))


def admin(server: Any, method: str, path: str, json: Any = None) -> httpx.Response:
    return httpx.request(
        method,
        f"{server.base}{path}",
        json=json,
        headers={"X-API-Key": server.api_key},
        timeout=10,
    )


def set_presence(server: Any, queue: str, agents: int) -> None:
    r = admin(server, "PUT", f"/v1/queues/{queue}/presence", {"agentsAvailable": agents})
    assert r.status_code == 200, r.text
    assert r.json()["agentsAvailable"] == agents


@pytest.fixture
def visit(browser: Any, server: Any) -> Iterator[Callable[..., tuple[Any, Browsing, str]]]:
    """A new visitor (a browser context) whose id is outside the holdout of the maps given."""
    contexts: list[Any] = []

    def start(*maps: str) -> tuple[Any, Browsing, str]:
        vid = engaged_visitor(*maps)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
        context.add_cookies([{"name": "opp_vid", "value": vid, "url": server.base}])
        contexts.append(context)
        page = context.new_page()
        return page, Browsing(page).attach(), vid

    yield start
    for c in contexts:
        c.close()


@pytest.fixture
def loans_presence(server: Any) -> Iterator[Callable[[int], None]]:
    """Sets the agents present on `loans`; back to none (0) at the end, whatever happened."""
    set_presence(server, "loans", 0)
    try:
        yield lambda n: set_presence(server, "loans", n)
    finally:
        set_presence(server, "loans", 0)


def search(page: Any, words: str) -> None:
    """The visitor types ``words`` into the search page's box and searches."""
    page.fill("#q", words)
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url(re.compile(r".*/demo/search\.html\?q=.+"))
    page.get_by_text("for “").wait_for()  # the page's result summary


def device_offer_rejected(
    page: Any, server: Any, seen: Browsing, vid: str, *, close_with: str
) -> dict[str, Any]:
    """Search "device activation", see the guide offered, close it; the server's action."""
    page.goto(f"{server.base}/demo/search.html?q=device+activation")
    offer = page.get_by_role("complementary", name=DEVICE_TITLE)
    offer.wait_for()
    assert widget_titles(page) == [DEVICE_TITLE]  # the title, in the shadow root
    assert visitor_id(page.context) == vid  # the id set before the snippet ran was kept
    actions = seen.actions()
    assert len(actions) == 1, actions
    action = actions[0]
    assert (action["map"], action["type"]) == (DEVICE, "content"), action
    assert action["content"]["title"] == DEVICE_TITLE
    # The widget reports `offered` too (the server's decision was the first).
    explained_when(
        page,
        server,
        vid,
        DEVICE,
        lambda m: states(m) == ["qualified", "offered", "offered"],
        "the widget's `offered` in the device map's history",
    )
    if close_with == "escape":
        # Escape closes a slide-in while focus is inside it.
        offer.get_by_role("button", name="No thanks").focus()
        page.keyboard.press("Escape")
    else:
        offer.get_by_role("button", name="Close").click()
    offer.wait_for(state="detached")
    assert widget_titles(page) == []
    m = explained_when(
        page,
        server,
        vid,
        DEVICE,
        lambda m: "rejected" in states(m),
        "`rejected` in the device map's history",
    )
    assert states(m) == ["qualified", "offered", "offered", "rejected"], m
    assert m["now"] == "already engaged this visit", m
    return dict(action)


def test_device_activation_search_gets_the_guide_once_and_closing_it_rejects_it(
    server: Any, visit: Any
) -> None:
    page, seen, vid = visit(DEVICE)
    action = device_offer_rejected(page, server, seen, vid, close_with="button")
    session = explain(server, vid)["sessionId"]
    assert action["id"] == instance_id(session, DEVICE)  # one instance per visit and map
    live = server.api(f"/v1/visitors/{vid}/live")
    assert "device-activation-searchers" in {s["name"] for s in live["segments"]}, live

    # The same search again, in the same visit: the map already engaged, nothing is offered.
    count = seen.count()
    search(page, "device activation")
    answer = settled(page, seen, count)
    assert "device-activation-searchers" in answer["segments"], answer
    assert seen.actions(count) == [], seen.log()[count:]
    assert widget_titles(page) == []
    assert seen.widget_requests == 1  # the first page's: this one was offered nothing
    m = explained(server, vid, DEVICE)
    assert m["now"] == "already engaged this visit", m
    assert states(m) == ["qualified", "offered", "offered", "rejected"], m  # nothing new
    assert explain(server, vid)["sessionId"] == session  # still the same visit


def test_after_a_rejected_content_offer_another_content_map_is_capped(
    server: Any, visit: Any
) -> None:
    page, seen, vid = visit(DEVICE, TRAVEL)
    device_offer_rejected(page, server, seen, vid, close_with="escape")

    # Now a search for the travel notice's words: it qualifies, but the content channel is
    # capped (an offer less than 10 s ago, or, after that, a rejected content offer).
    count = seen.count()
    search(page, "travel alert")
    answer = settled(page, seen, count)
    assert "travel-alert-searchers" in answer["segments"], answer
    assert seen.actions(count) == [], seen.log()[count:]
    assert widget_titles(page) == []
    m = explained_when(
        page,
        server,
        vid,
        TRAVEL,
        lambda m: "blocked" in states(m),
        "the travel notice blocked",
    )
    assert states(m) == ["qualified", "blocked"], m
    caps = r"frequency cap: (an offer \d+ s ago|a content offer was rejected this visit)"
    assert re.fullmatch(caps, m["history"][1]["reason"]), m
    assert re.fullmatch(f"blocked: {caps}", m["now"]), m
    assert TRAVEL_TITLE not in widget_titles(page)


def test_loan_struggler_gets_a_chat_only_once_agents_are_present(
    server: Any, visit: Any, loans_presence: Callable[[int], None]
) -> None:
    page, seen, vid = visit(CHAT)
    page.goto(f"{server.base}/demo/apply.html")
    page.get_by_role("button", name="Continue").wait_for()
    drain(page)
    assert visitor_id(page.context) == vid
    # The visitor signed in earlier: traits.firstName and identifier.email are known.
    email = f"ana.{vid[:12]}@example.com"
    page.evaluate("(email) => opportune('identify', {email: email}, {firstName: 'Ana'})", email)
    drain(page)
    wait_until(
        page,
        lambda: server.api(f"/v1/visitors/{vid}/live")["customerId"],
        what="the visitor identified as a customer",
    )

    # Two failed attempts, one field each: a loan-form struggler. No agents on `loans`.
    count = seen.count()
    page.fill("#amount", "500")
    page.select_option("#term", "36")
    page.select_option("#purpose", "Car")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Enter an amount between").wait_for()
    page.fill("#amount", "")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Enter an amount", exact=True).wait_for()
    answer = settled(page, seen, count)
    assert "loan-form-strugglers" in answer["segments"], answer
    assert seen.actions() == [], seen.answers()
    assert seen.widget_requests == 0 and widget_titles(page) == []
    m = explained_when(
        page,
        server,
        vid,
        CHAT,
        lambda m: "blocked" in states(m),
        "the chat blocked for want of agents",
    )
    assert m["now"].startswith("blocked: no agents"), m
    assert states(m) == ["qualified", "blocked"], m
    assert m["history"][1]["reason"].startswith("no agents"), m

    # Three loan advisers come online; the visitor keeps at it (a third error, another
    # field): the next decision offers the chat.
    loans_presence(3)
    assert explained(server, vid, CHAT)["now"] == "fired: offered now"  # a dry run
    count = seen.count()
    page.fill("#amount", "7500")
    page.select_option("#term", "")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Choose a term").wait_for()
    invitation = page.get_by_role("complementary", name=CHAT_TITLE)
    invitation.wait_for()
    assert widget_titles(page) == [CHAT_TITLE]
    actions = seen.actions(count)
    assert [(a["map"], a["type"]) for a in actions] == [(CHAT, "chat")], actions
    instance = actions[0]["id"]
    assert instance == instance_id(explain(server, vid)["sessionId"], CHAT)
    assert invitation.get_by_text("A loan adviser can help you finish it now.").is_visible()

    invitation.get_by_role("button", name="Chat now").click()
    chat = page.get_by_role("dialog", name=CHAT_TITLE)
    chat.wait_for()
    chat.get_by_text("Before we start").wait_for()
    assert chat.get_by_label("First name").input_value() == "Ana"  # traits.firstName
    assert chat.get_by_label("Email").input_value() == email  # identifier.email
    chat.get_by_label("What is it about?").select_option("Eligibility")
    chat.get_by_role("button", name="Start chat").click()
    status = chat.get_by_role("status")
    status.get_by_text(QUEUED).wait_for()  # the live region says the visitor is queued
    assert status.get_attribute("aria-live") == "polite"
    assert chat.locator("form").count() == 0

    m = explained_when(
        page,
        server,
        vid,
        CHAT,
        lambda m: "started" in states(m),
        "`started` in the chat map's history",
    )
    assert states(m) == ["qualified", "blocked", "offered", "offered", "accepted", "started"], m
    assert m["now"] == "already engaged this visit", m


def test_a_map_outside_its_schedule_shows_nothing(server: Any, visit: Any) -> None:
    name = "e2e-closed-branch-hours"
    words = "branch opening hours"
    doc = {
        "name": name,
        "description": "An emergency closure: nothing engages",
        "trigger": {"searched": [words]},
        "schedule": {"closed": True},
        "action": {
            "type": "content",
            "content": {
                "title": "Our branches open late on Thursdays",
                "body": "Find your nearest branch and its hours.",
                "layout": "modal",
            },
        },
    }
    r = admin(server, "POST", "/v1/action-maps", doc)
    assert r.status_code == 201, r.text
    try:
        page, seen, vid = visit()  # the map holds nobody out
        page.goto(f"{server.base}/demo/search.html?q={words.replace(' ', '+')}")
        page.get_by_text("for “").wait_for()
        answer = settled(page, seen, 0)
        assert answer["visitorId"] == vid
        m = explained_when(
            page,
            server,
            vid,
            name,
            lambda m: "blocked" in states(m),
            "the closed map blocked",
        )
        assert m["now"] == "blocked: schedule: closed", m
        assert [(h["state"], h["reason"]) for h in m["history"]] == [
            ("qualified", None),
            ("blocked", "schedule: closed"),
        ], m
        drain(page)
        assert seen.actions() == [], seen.answers()
        assert seen.widget_requests == 0  # never offered anything: the widget never loaded
        assert widget_titles(page) == []
    finally:
        r = admin(server, "DELETE", f"/v1/action-maps/{name}")
        assert r.status_code == 200, r.text
    assert admin(server, "GET", f"/v1/action-maps/{name}").status_code == 404
