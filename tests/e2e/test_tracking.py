"""The snippet on the demo site, in real headless Chromium, against the real server.

Each test drives the browser like a visitor, then checks what the server stored through
the admin read API (visitors, sessions, events, customers) — and, where the point is what
the browser did or did not send, the requests themselves.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

SITE_KEY = "demo-site-key"
OUTBOX_KEY = f"opp_outbox:{SITE_KEY}"
# A phone's user agent and screen: the server must call this session "mobile".
PIXEL_7 = {
    "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/129.0.0.0 Mobile Safari/537.36",
    "viewport": {"width": 412, "height": 839},
    "device_scale_factor": 2.625,
    "is_mobile": True,
    "has_touch": True,
    "locale": "es-ES",
    "timezone_id": "Europe/Madrid",
}


# Beacons sent while a page unloads are invisible to Playwright (Chromium sends them from
# outside the page), so a wrapper keeps a copy of each body in localStorage for the test.
BEACON_LOG = """
(() => {
  const send = navigator.sendBeacon.bind(navigator);
  navigator.sendBeacon = (url, body) => {
    const ok = send(url, body);
    if (ok && String(url).endsWith('/v1/events')) {
      const log = JSON.parse(localStorage.getItem('e2e-beacons') || '[]');
      log.push(String(body));
      localStorage.setItem('e2e-beacons', JSON.stringify(log));
    }
    return ok;
  };
})();
"""


@dataclass
class Recorder:
    """Every batch a browser context sent to /v1/events (fetch and sendBeacon), and answers."""

    fetched: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[int, dict[str, Any] | None]] = field(default_factory=list)

    def attach(self, context: Any) -> Recorder:
        def on_request(req: Any) -> None:
            if req.url.endswith("/v1/events") and req.method == "POST":
                self.fetched.append(json.loads(req.post_data))

        def on_response(resp: Any) -> None:
            if resp.url.endswith("/v1/events") and resp.request.method == "POST":
                try:
                    body = resp.json()
                except Exception:  # a non-JSON answer is still an answer
                    body = None
                self.answers.append((resp.status, body))

        context.add_init_script(BEACON_LOG)
        context.on("request", on_request)
        context.on("response", on_response)
        return self

    def batches(self, page: Any) -> list[dict[str, Any]]:
        beacons = page.evaluate("JSON.parse(localStorage.getItem('e2e-beacons') || '[]')")
        return self.fetched + [json.loads(b) for b in beacons]

    def events(self, page: Any) -> list[dict[str, Any]]:
        """Events as first sent (a retried event appears once)."""
        seen: dict[str, dict[str, Any]] = {}
        for b in self.batches(page):
            for e in b["events"]:
                seen.setdefault(e["id"], e)
        return sorted(seen.values(), key=lambda e: e["ts"])


def wait_until(
    page: Any, check: Callable[[], Any], timeout: float = 10, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise.

    It waits with the page's timer, not ``time.sleep``: Playwright's sync API runs route
    handlers and event callbacks only while the test is inside a Playwright call.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(100)


def drain(page: Any, timeout: float = 10) -> None:
    """Ask the snippet to send now and wait until its stored outbox is empty."""
    page.wait_for_function("() => window.opportune && window.opportune.loaded")
    page.evaluate("opportune('flush')")
    page.wait_for_function(
        f"() => localStorage.getItem({OUTBOX_KEY!r}) === null", timeout=timeout * 1000
    )


def visitor_id(context: Any) -> str:
    ids = [c["value"] for c in context.cookies() if c["name"] == "opp_vid"]
    assert ids, "no opp_vid cookie"
    return str(ids[0])


def opp_storage(page: Any) -> dict[str, Any]:
    """The snippet's cookies and localStorage keys (the page's own keys are not counted)."""
    cookies = [c["name"] for c in page.context.cookies() if c["name"].startswith("opp_")]
    keys = page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('opp_'))")
    return {"cookies": cookies, "localStorage": keys}


@pytest.fixture(scope="module")
def phone(launch: Any) -> Any:
    """A browser that is a phone for every request it makes.

    The context's user-agent override does not reach beacons sent while a page unloads
    (Chromium sends them from outside the page), so the phone's user agent is also given on
    the command line: the server must see a phone whichever way an event travels.
    """
    return launch(f"--user-agent={PIXEL_7['user_agent']}")


def test_mobile_journey_is_stored_in_order_with_enrichment(server: Any, phone: Any) -> None:
    context = phone.new_context(**PIXEL_7)
    page = context.new_page()
    sent = Recorder().attach(context)
    landing = f"{server.base}/demo/?utm_source=news&utm_medium=email&utm_campaign=spring"
    page.goto(landing, referer="https://news.example.com/spring-issue")

    # Home -> product: a link click, scrolling to the rates table.
    page.get_by_role("link", name="See loan rates").click()
    page.wait_for_url("**/product.html")
    for _ in range(3):  # a thumb scrolling down the page, a screen at a time
        page.mouse.wheel(0, 500)
        page.wait_for_timeout(60)
    page.locator("#rates").scroll_into_view_if_needed()  # stops at the rates table
    page.wait_for_timeout(300)
    for _ in range(10):
        page.mouse.wheel(0, 500)
        page.wait_for_timeout(60)
    page.wait_for_timeout(400)

    # Back home, search from the page's search box.
    page.get_by_role("link", name="Opportune Bank").click()
    page.wait_for_url("**/demo/index.html")
    page.get_by_placeholder("e.g. early repayment").fill("device activation")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url("**/search.html?q=device+activation")
    page.get_by_text("1 result").or_(page.get_by_text("results for")).first.wait_for()

    # The loan form: fail step 1 empty, fail step 2 with a bad email, fail the final
    # consent box (HTML5 validation), then submit.
    page.get_by_role("link", name="Apply", exact=True).click()
    page.wait_for_url("**/apply.html")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Enter an amount").wait_for()
    page.fill("#amount", "5000")
    page.select_option("#term", "36")
    page.select_option("#purpose", "Car")
    page.get_by_role("button", name="Continue").click()
    page.fill("#firstName", "Ana")
    page.fill("#email", "ana.garcia-at-example.com")
    page.fill("#income", "32000")
    page.select_option("#employment", "Employed")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Enter an email like").wait_for()
    page.fill("#email", "ana.garcia@example.com")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Submit application").click()  # box not ticked
    page.wait_for_timeout(300)
    page.check("#agree")
    page.get_by_role("button", name="Submit application").click()
    page.wait_for_url("**/confirmation.html?ref=*")
    page.get_by_text("Thank you").wait_for()
    drain(page)

    vid = visitor_id(context)
    sessions = server.sessions_of_visitor(vid)
    assert len(sessions) == 1, sessions
    s = sessions[0]
    assert s["deviceType"] == "mobile"
    assert s["browser"] == "Chrome Mobile"
    assert s["os"] == "Android"
    assert s["referrerDomain"] == "news.example.com"
    assert (s["utmSource"], s["utmMedium"], s["utmCampaign"]) == ("news", "email", "spring")
    assert s["landingUrl"] == landing
    assert s["locale"] == "es-ES" and s["timezone"] == "Europe/Madrid"

    stored = server.events_of_session(s["id"])
    client = sent.events(page)
    # Every event the browser sent is stored exactly once, and nothing else.
    assert sorted(e["eventId"] for e in stored) == sorted(e["id"] for e in client)
    assert s["eventCount"] == len(stored)

    # In order: the journey's milestones appear on the server in the order they happened.
    def milestone(e: dict[str, Any]) -> str | None:
        t, url = e["type"], e.get("url") or ""
        page_name = url.split("/demo/")[-1].split("?")[0] if url else ""
        data = e.get("data") or e.get("attributes") or {}
        if t == "page_view":
            return f"view:{page_name or 'index'}"
        if t == "search":
            return f"search:{e['query']}"
        if t == "form_error":
            return f"error:{data.get('field')}"
        if t in ("form_submitted", "custom", "identify"):
            return f"{t}:{e.get('name') or ''}"
        return None

    journey = [m for m in map(milestone, stored) if m]
    assert journey == [
        "view:index",
        "view:product.html",
        "view:index.html",
        "form_submitted:search.html",  # the search box is a form too
        "view:search.html",
        "search:device activation",
        "view:apply.html",
        "error:amount",
        "error:term",
        "error:purpose",
        "error:email",
        "error:agree",
        "form_submitted:loan",
        "custom:loan_submitted",
        "identify:",
        "view:confirmation.html",
    ], journey
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in stored:
        by_type.setdefault(e["type"], []).append(e)
    assert by_type["page_view"][0]["referrer"] == "https://news.example.com/spring-issue"
    click = next(e for e in by_type["click"] if e["name"] == "See loan rates")
    assert click["data"]["href"].endswith("/demo/product.html")
    depths = [e["data"]["depth"] for e in by_type["scroll"] if "product" in e["url"]]
    assert depths == [25, 50, 75, 100]  # each milestone once on the page
    # The rates table was scrolled to and dwelt on; the home page's band may or may not
    # have been half in view long enough before the visitor moved on (timing), so only the
    # deliberate one is required.
    assert "loan-rates" in {e["name"] for e in by_type["viewport"]}
    errors = {e["data"]["field"]: e["data"] for e in by_type["form_error"]}
    assert errors["amount"]["message"] == "Enter an amount"
    assert errors["email"]["message"] == "Enter an email like name@example.com"
    assert errors["agree"]["reason"] == "valueMissing"  # from the browser's own validation
    custom = by_type["custom"][0]
    assert custom["data"] == {"amount": 5000, "termMonths": 36, "purpose": "Car"}

    # Identify linked this visitor to a customer known by the normalised email.
    visitor = server.api(f"/v1/visitors/{vid}")
    assert visitor["customerId"]
    customer = server.api(f"/v1/customers/{visitor['customerId']}")
    assert {"kind": "email", "value": "ana.garcia@example.com"} in customer["identifiers"]
    assert vid in customer["visitors"]

    # Personal data travels only in identify: not in any other event the browser sent.
    for e in client:
        if e["type"] != "identify":
            text = json.dumps(e)
            assert "ana.garcia" not in text and '"Ana"' not in text, e
    context.close()


def test_second_device_with_same_email_joins_the_same_customer(server: Any, browser: Any) -> None:
    email = f"marta.{int(time.time() * 1000)}@example.com"
    ids = []
    for n, upper in enumerate((False, True)):
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.base}/demo/product.html")
        page.goto(f"{server.base}/demo/login.html")
        # The second device types it differently: the server normalises it.
        page.fill("#login-email", f"  {email.upper()} " if upper else email)
        page.fill("#login-password", "secret")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/account.html")
        drain(page)
        vid = visitor_id(context)
        ids.append(vid)
        visitor = wait_until(
            page,
            lambda vid=vid: (v := server.api(f"/v1/visitors/{vid}"))["customerId"] and v,
            what=f"device {n + 1} linked to a customer",
        )
        ids.append(visitor["customerId"])
        context.close()
    first_vid, first_customer, second_vid, second_customer = ids
    assert first_vid != second_vid
    assert first_customer == second_customer
    customer = server.api(f"/v1/customers/{first_customer}")
    assert set(customer["visitors"]) == {first_vid, second_vid}
    sessions = server.api(f"/v1/customers/{first_customer}/sessions")["items"]
    assert {s["visitorId"] for s in sessions} == {first_vid, second_vid}
    for s in sessions:
        kinds = [e["type"] for e in server.events_of_session(s["id"])]
        assert kinds.count("page_view") == 3 and "identify" in kinds, kinds


def test_nothing_stored_or_sent_before_consent(server: Any, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    sent = Recorder().attach(context)
    page.goto(f"{server.base}/demo/consent.html")  # init with requireConsent: true
    page.wait_for_function("() => window.opportune && window.opportune.loaded")
    page.mouse.move(100, 200)
    page.evaluate("opportune('record', 'banner_shown')")
    page.wait_for_timeout(2500)  # over two flush intervals
    assert sent.batches(page) == []
    assert opp_storage(page) == {"cookies": [], "localStorage": []}

    page.get_by_role("button", name="Accept").click()
    drain(page)
    # This page's events from before the consent were kept in memory, and now sent.
    assert [e["type"] for e in sent.events(page)][:2] == ["page_view", "custom"]
    vid = visitor_id(context)
    stored = server.events_of_visitor(vid)
    assert [e["type"] for e in stored][:2] == ["page_view", "custom"]

    # A later page remembers the grant; withdrawing it stops tracking and clears storage.
    page.reload()
    drain(page)
    count = len(sent.events(page))
    page.get_by_role("button", name="Change my choice").click()
    page.get_by_role("button", name="Decline").click()
    assert opp_storage(page) == {"cookies": [], "localStorage": ["opp_consent"]}
    page.goto(f"{server.base}/demo/index.html")  # a page that does not require consent
    page.get_by_role("link", name="See loan rates").click()
    page.wait_for_timeout(2000)
    assert len(sent.events(page)) == count
    assert opp_storage(page)["cookies"] == []

    # Changing one's mind on a later page: tracking resumes from there, as a new visitor.
    page.goto(f"{server.base}/demo/consent.html")
    page.get_by_role("button", name="Change my choice").click()
    page.get_by_role("button", name="Accept").click()
    page.get_by_role("link", name="Privacy").click()
    page.wait_for_url("**/help.html?article=privacy")
    drain(page)
    assert visitor_id(context) != vid
    later = [e["type"] for e in sent.events(page)[count:]]
    assert later[:2] == ["click", "page_view"], later
    context.close()


def test_do_not_track_honoured_only_where_the_site_says_so(server: Any, browser: Any) -> None:
    context = browser.new_context()
    context.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'});"
    )
    page = context.new_page()
    sent = Recorder().attach(context)
    page.goto(f"{server.base}/demo/consent.html")  # honorDoNotTrack: true
    page.get_by_role("button", name="Accept").click()  # even consent does not override DNT
    page.wait_for_timeout(2500)
    assert sent.batches(page) == []
    assert opp_storage(page)["cookies"] == []

    page.goto(f"{server.base}/demo/index.html")  # a site that does not honour DNT tracks
    drain(page)
    assert [e["type"] for e in sent.events(page)] == ["page_view"]
    context.close()


def test_spa_history_changes_are_page_views(server: Any, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.base}/demo/help.html")
    page.wait_for_function("() => window.opportune && window.opportune.loaded")

    def then_pause() -> None:
        # URL changes under 50 ms apart count once (a router's redirect); people are slower.
        page.wait_for_timeout(150)

    page.get_by_role("link", name="Device activation").click()
    page.get_by_role("heading", name="Device activation").wait_for()
    then_pause()
    page.get_by_role("link", name="Early repayment").click()
    page.get_by_role("heading", name="Early repayment").wait_for()
    then_pause()
    page.go_back()  # popstate
    page.get_by_role("heading", name="Device activation").wait_for()
    then_pause()
    page.get_by_role("link", name="Still stuck? Contact us").click()  # hashchange
    then_pause()
    page.evaluate("history.replaceState(history.state, '', location.href)")  # no change
    then_pause()
    drain(page)
    views = [
        (e["url"].split("/demo/")[1], e["title"])
        for e in server.events_of_visitor(visitor_id(context))
        if e["type"] == "page_view"
    ]
    assert views == [
        ("help.html", "Getting started · Help centre · Opportune Bank"),
        ("help.html?article=device", "Device activation · Help centre · Opportune Bank"),
        ("help.html?article=repayment", "Early repayment · Help centre · Opportune Bank"),
        ("help.html?article=device", "Device activation · Help centre · Opportune Bank"),
        ("help.html?article=device#contact", "Device activation · Help centre · Opportune Bank"),
    ]
    context.close()


def test_offline_events_wait_in_the_outbox_and_arrive_exactly_once(
    server: Any, browser: Any
) -> None:
    context = browser.new_context()
    page = context.new_page()
    sent = Recorder().attach(context)
    mode = {"now": "down"}
    attempts = {"down": 0, "lost": 0, "up": 0}

    def endpoint(route: Any) -> None:
        now = mode["now"]
        attempts[now] += 1
        if now == "down":  # the server is unreachable
            route.abort("connectionrefused")
        elif now == "lost":  # the server stores the batch, the answer never reaches the page
            route.fetch()
            route.abort("connectionreset")
            mode["now"] = "up"
        else:
            route.continue_()

    page.route("**/v1/events", endpoint)
    page.goto(f"{server.base}/demo/index.html")
    page.wait_for_function("() => window.opportune && window.opportune.loaded")
    for n in range(5):
        page.evaluate(f"opportune('record', 'offline_{n}', {{n: {n}}})")
    wait_until(page, lambda: attempts["down"] >= 1, what="a failed send")
    stored = json.loads(page.evaluate(f"localStorage.getItem({OUTBOX_KEY!r})"))
    assert [e["type"] for e in stored] == ["page_view"] + ["custom"] * 5

    # The visitor moves on while offline: the outbox travels to the next page.
    page.get_by_role("link", name="See loan rates").click()
    page.wait_for_url("**/product.html")
    page.wait_for_function(f"() => JSON.parse(localStorage.getItem({OUTBOX_KEY!r})).length >= 8")
    mode["now"] = "lost"
    # The browser reports the network is back: the snippet sends at once, not at the end of
    # its growing backoff; then retries the batch whose answer was lost after ~1 s.
    page.evaluate("dispatchEvent(new Event('online'))")
    wait_until(page, lambda: attempts["lost"] >= 1, what="a send whose answer is lost")
    drain(page)
    assert attempts["up"] >= 1

    vid = visitor_id(context)
    stored_ids = [e["eventId"] for e in server.events_of_visitor(vid)]
    client_ids = [e["id"] for e in sent.events(page)]
    assert len(stored_ids) == len(set(stored_ids))
    assert sorted(stored_ids) == sorted(client_ids)
    names = [e["name"] for e in server.events_of_visitor(vid) if e["type"] == "custom"]
    assert names == [f"offline_{n}" for n in range(5)]
    # The batch whose answer was lost was sent again and the server said "duplicate".
    assert any(body and body.get("duplicates", 0) > 0 for _, body in sent.answers)
    context.close()


def test_session_times_out_after_inactivity(server: Any, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    sent = Recorder().attach(context)
    page.goto(f"{server.base}/demo/index.html")
    drain(page)

    def session_cookie() -> tuple[int, int]:
        value = next(c["value"] for c in context.cookies() if c["name"] == "opp_ses")
        start, last, _viewed = value.split(".")
        return int(start, 36), int(last, 36)

    start, _ = session_cookie()
    # Within the visit, an internal navigation carries no referrer (nothing new to say).
    page.get_by_role("link", name="See loan rates").click()
    page.wait_for_url("**/product.html")
    drain(page)
    assert session_cookie()[0] == start
    view = [e for e in sent.events(page) if e["type"] == "page_view"][-1]
    assert view["url"].endswith("/product.html") and "referrer" not in view

    # 25 minutes without activity (the timeout is 20): the next page view starts a visit,
    # and as a landing page view it carries the document referrer.
    stale = int(time.time() * 1000) - 25 * 60_000
    page.evaluate(
        "([s, l]) => document.cookie = 'opp_ses=' + s.toString(36) + '.' + l.toString(36)"
        " + '.1; Path=/; SameSite=Lax; Max-Age=3600'",
        [stale - 60_000, stale],
    )
    page.get_by_role("link", name="Apply", exact=True).click()  # the click starts the visit
    page.wait_for_url("**/apply.html")
    drain(page)
    view = [e for e in sent.events(page) if e["type"] == "page_view"][-1]
    assert view["url"].endswith("/apply.html")
    assert view["referrer"].endswith("/demo/product.html")
    assert session_cookie()[0] > stale


def test_server_agrees_on_a_new_session_after_a_long_gap(server: Any, browser: Any) -> None:
    """A visitor offline for 25 minutes: both views reach the server in one late batch,
    placed 25 minutes apart on the server's clock (sentAt correction), in two sessions."""
    context = browser.new_context()
    page = context.new_page()
    page.clock.install()
    page.route("**/v1/events", lambda route: route.abort("internetdisconnected"))
    page.goto(f"{server.base}/demo/help.html")
    # The first page's events are made (the article is in view) before time moves on.
    page.wait_for_function(
        f"() => (localStorage.getItem({OUTBOX_KEY!r}) || '').includes('\"viewport\"')"
    )
    page.clock.run_for("25:00")  # timers fire on time: the idle event at 30 s
    page.get_by_role("link", name="Device activation").click()  # an SPA page view
    page.get_by_role("heading", name="Device activation").wait_for()
    page.clock.run_for(500)
    page.unroute("**/v1/events")
    page.evaluate("dispatchEvent(new Event('online'))")  # the network is back
    page.clock.run_for(1000)
    page.wait_for_function(f"() => localStorage.getItem({OUTBOX_KEY!r}) === null", timeout=10_000)
    sessions = server.sessions_of_visitor(visitor_id(context))
    assert len(sessions) == 2, sessions
    gap = sessions[1]["startedAt"] - sessions[0]["lastEventAt"]
    assert 20 * 60_000 < gap <= 25 * 60_000 + 5_000
    first = [e["type"] for e in server.events_of_session(sessions[0]["id"])]
    second = server.events_of_session(sessions[1]["id"])
    assert first[0] == "page_view" and "idle" in first
    # Only the order of click and page view is asserted in the new visit: under the fake
    # clock the browser's time does not flow between batches, so the server's correction
    # (serverNow - sentAt) may place an event of another batch a little off.
    kinds = [e["type"] for e in second]
    assert kinds.index("click") < kinds.index("page_view")
    view = second[kinds.index("page_view")]
    assert re.search(r"article=device$", view["url"])
    context.close()


def test_outbox_is_bounded_and_oversized_values_are_cut_to_the_servers_limits(
    server: Any, browser: Any
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.route("**/v1/events", lambda route: route.abort("connectionrefused"))
    page.goto(f"{server.base}/demo/index.html")
    page.wait_for_function("() => window.opportune && window.opportune.loaded")
    page.evaluate("for (let n = 0; n < 1100; n++) opportune('record', 'bulk', {n})")
    stored = json.loads(page.evaluate(f"localStorage.getItem({OUTBOX_KEY!r})"))
    assert len(stored) == 1000
    assert [e["attributes"]["n"] for e in stored[-3:]] == [1097, 1098, 1099]  # oldest dropped

    context.close()

    # Values over every limit, a 4-byte character exactly where a cut falls, a nested
    # object: the server must accept the event, not refuse the batch. A visitor of their
    # own: the first one's queue, retried with backoff, may reach the server at any moment
    # once the line is back, which made this count flaky on a loaded machine.
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.base}/demo/index.html")
    page.wait_for_function("() => window.opportune && window.opportune.loaded")
    page.evaluate(
        """() => {
          const attrs = {nested: {a: [1, 2]}, nan: NaN, skip: undefined};
          for (let i = 0; i < 60; i++) attrs['k' + i + 'x'.repeat(80)] = 'v'.repeat(1023) + '😀';
          opportune('record', 'n'.repeat(600), attrs);
        }"""
    )
    drain(page)
    custom = [e for e in server.events_of_visitor(visitor_id(context)) if e["type"] == "custom"]
    assert len(custom) == 1
    data = custom[0]["data"]
    assert len(custom[0]["name"]) == 512
    assert len(data) == 50 and all(len(k) <= 64 for k in data)
    assert data["nested"] == '{"a":[1,2]}' and data["nan"] is None and "skip" not in data
    long_values = [v for k, v in data.items() if k.startswith("k")]
    assert all(v == "v" * 1023 for v in long_values)  # the emoji did not fit: not half of it
    context.close()


def test_reset_on_sign_out_starts_a_new_anonymous_visitor(server: Any, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.base}/demo/login.html")
    page.fill("#login-email", f"luis.{int(time.time() * 1000)}@example.com")
    page.fill("#login-password", "secret")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/account.html")
    drain(page)
    before = visitor_id(context)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login.html")
    drain(page)
    after = visitor_id(context)
    assert after != before
    assert server.api(f"/v1/visitors/{before}")["customerId"]
    assert server.api(f"/v1/visitors/{after}")["customerId"] is None
    # The sign-out click was recorded before the reset: it belongs to the signed-in visitor.
    clicks = [e["name"] for e in server.events_of_visitor(before) if e["type"] == "click"]
    assert "Sign out" in clicks
    assert [e["type"] for e in server.events_of_visitor(after)] == ["page_view"]
    context.close()
