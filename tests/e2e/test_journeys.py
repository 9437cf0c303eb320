"""Segments and outcomes of the example workspace, reached by visitors in real Chromium.

The server runs the example workspace's segments and outcomes (see conftest.py). Each test
drives the demo site like a visitor, then checks what the server said: in the answers the
browser received from ``POST /v1/events`` (``segments`` and ``outcomes``: the visitor's
state after the batch) and in the admin live view, ``GET /v1/visitors/{id}/live``.

Conditions that take a moment (an event travelling, the server evaluating it) are waited
for by polling with a deadline; "not yet" is asserted only once the snippet's outbox is
empty, i.e. once the server acknowledged every event the visitor made so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

SITE_KEY = "demo-site-key"
OUTBOX_KEY = f"opp_outbox:{SITE_KEY}"
# A phone's user agent and screen (as in test_tracking.py): the server must call it mobile.
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
# A desktop browser: the same Chrome, on Windows (the headless default names itself
# "HeadlessChrome", which is not what a visitor's browser says).
DESKTOP = {
    "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36",
    "viewport": {"width": 1366, "height": 900},
}
CAMPAIGN = "/demo/index.html?utm_source=google&utm_medium=cpc&utm_campaign=loans"


@dataclass
class Answers:
    """The answers a browser context received to its ``POST /v1/events`` requests.

    Beacons sent while a page unloads have no answer the page can see; only fetches do.
    """

    received: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def attach(self, context: Any) -> Answers:
        def on_response(resp: Any) -> None:
            if resp.url.endswith("/v1/events") and resp.request.method == "POST":
                try:
                    body = resp.json()
                except Exception:  # kept, so that the test says what it was
                    body = {"_text": resp.text()}
                self.received.append((resp.status, body))

        context.on("response", on_response)
        return self

    def bodies(self) -> list[dict[str, Any]]:
        for status, body in self.received:
            assert 200 <= status < 300, (status, body)
        return [body for _, body in self.received]

    def last(self) -> dict[str, Any]:
        bodies = self.bodies()
        assert bodies, "no answer to /v1/events yet"
        return bodies[-1]


def wait_until(
    page: Any, check: Callable[[], Any], timeout: float = 10, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise.

    It waits with the page's timer, not ``time.sleep``: Playwright's sync API runs event
    callbacks (the answers above) only while the test is inside a Playwright call.
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
    """Ask the snippet to send now and wait until the server acknowledged everything."""
    page.wait_for_function("() => window.opportune && window.opportune.loaded")
    page.evaluate("opportune('flush')")
    page.wait_for_function(
        f"() => localStorage.getItem({OUTBOX_KEY!r}) === null", timeout=timeout * 1000
    )


def settled(page: Any, answers: Answers, count: int) -> dict[str, Any]:
    """Drain, then wait for answers beyond the first ``count`` (those received before the
    visitor's last action); return the latest, the server's word on everything so far."""
    drain(page)
    wait_until(page, lambda: len(answers.received) > count, what="an answer to /v1/events")
    return answers.last()


def visitor_id(context: Any) -> str:
    ids = [c["value"] for c in context.cookies() if c["name"] == "opp_vid"]
    assert ids, "no opp_vid cookie"
    return str(ids[0])


def live(server: Any, vid: str) -> dict[str, Any]:
    return dict(server.api(f"/v1/visitors/{vid}/live"))


def names(items: list[dict[str, Any]]) -> set[str]:
    return {i["name"] for i in items}


def live_when(
    page: Any, server: Any, vid: str, test: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The live view, polled until ``test`` holds of it."""

    def check() -> dict[str, Any] | None:
        view = live(server, vid)
        return view if test(view) else None

    return dict(wait_until(page, check, what=what))


@pytest.fixture(scope="module")
def phone(launch: Any) -> Any:
    """A browser that is a phone for every request, beacons included (see test_tracking)."""
    return launch(f"--user-agent={PIXEL_7['user_agent']}")


@pytest.fixture(scope="module")
def desktop(launch: Any) -> Any:
    return launch(f"--user-agent={DESKTOP['user_agent']}")


def test_mobile_campaign_visitor_struggles_with_the_loan_form_then_applies(
    server: Any, phone: Any
) -> None:
    context = phone.new_context(**PIXEL_7)
    page = context.new_page()
    answers = Answers().attach(context)

    # 1. Landing from a paid campaign link, on a phone.
    page.goto(f"{server.base}{CAMPAIGN}", referer="https://www.google.com/")
    first = settled(page, answers, 0)
    vid = visitor_id(context)
    assert first["visitorId"] == vid
    assert {"mobile-visitors", "paid-campaign"} <= set(first["segments"]), first
    assert first["outcomes"] == []
    view = live_when(
        page,
        server,
        vid,
        lambda v: {"mobile-visitors", "paid-campaign"} <= names(v["segments"]),
        "mobile-visitors and paid-campaign in the live view",
    )
    assert view["visitorId"] == vid and view["active"] is True
    assert view["currentPage"] == f"{server.base}{CAMPAIGN}"
    segs = {s["name"]: s for s in view["segments"]}
    assert set(segs) == {"mobile-visitors", "paid-campaign"}, segs  # nothing else yet
    for name in ("mobile-visitors", "paid-campaign"):
        assert segs[name]["scope"] == "session"
        assert view["startedAt"] <= segs[name]["since"] <= view["lastEventAt"]
    assert view["outcomes"] == []

    # 2. Reads about the loan, then opens the application: a loan shopper.
    count = len(answers.received)
    page.get_by_role("link", name="See loan rates").click()
    page.wait_for_url("**/demo/product.html")
    page.get_by_role("link", name="Apply now").click()
    page.wait_for_url("**/demo/apply.html")
    # The product page's events left by beacon as it unloaded (no answer to see); the
    # application's page view goes at the snippet's own pace (not flushed early, so the
    # beacon is not raced), and the answer to it comes back to the page.
    wait_until(page, lambda: len(answers.received) > count, what="the apply page's answer")
    answer = settled(page, answers, count)
    assert "loan-shoppers" in answer["segments"], answer
    view = live(server, vid)
    assert view["currentPage"] == f"{server.base}/demo/apply.html"
    assert "loan-shoppers" in names(view["segments"])
    # Still the campaign's visit: its segments hold on every page of it.
    assert {"mobile-visitors", "paid-campaign"} <= names(view["segments"])

    # 3. The form refuses an amount out of range: one error, not yet a struggler.
    count = len(answers.received)
    page.fill("#amount", "500")
    page.select_option("#term", "36")
    page.select_option("#purpose", "Car")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Enter an amount between").wait_for()
    answer = settled(page, answers, count)
    # Every event so far is acknowledged: one form error is not enough.
    assert "loan-form-strugglers" not in answer["segments"], answer
    assert "mobile-loan-strugglers" not in answer["segments"], answer
    assert not {"loan-form-strugglers", "mobile-loan-strugglers"} & names(
        live(server, vid)["segments"]
    )

    # 4. Then the visitor clears the amount and tries again: a second error on the form.
    count = len(answers.received)
    page.fill("#amount", "")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Enter an amount", exact=True).wait_for()
    answer = settled(page, answers, count)
    strugglers = {"loan-form-strugglers", "mobile-loan-strugglers"}
    assert strugglers <= set(answer["segments"]), answer
    view = live_when(
        page,
        server,
        vid,
        lambda v: strugglers <= names(v["segments"]),
        "loan-form-strugglers and mobile-loan-strugglers in the live view",
    )
    assert names(view["segments"]) == {
        "mobile-visitors",
        "paid-campaign",
        "loan-shoppers",
        "loan-form-strugglers",
        "mobile-loan-strugglers",
    }, view["segments"]
    segs = {s["name"]: s for s in view["segments"]}
    assert segs["mobile-loan-strugglers"]["visibleToAgents"] is True
    # The combined segment starts when its second part does, not before.
    assert segs["mobile-loan-strugglers"]["since"] >= segs["loan-form-strugglers"]["since"]
    assert view["outcomes"] == []

    # 5. Gets it right this time, through the three steps, and submits.
    amount = 7500
    count = len(answers.received)
    page.fill("#amount", str(amount))
    page.get_by_role("button", name="Continue").click()
    page.fill("#firstName", "Lucía")
    page.fill("#email", f"lucia.{int(time.time() * 1000)}@example.com")
    page.fill("#income", "41000")
    page.select_option("#employment", "Employed")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("€7,500").wait_for()  # the review step's summary
    page.check("#agree")
    page.get_by_role("button", name="Submit application").click()
    page.wait_for_url("**/demo/confirmation.html?ref=*")
    page.get_by_text("Thank you").wait_for()
    confirmation = page.url
    answer = settled(page, answers, count)
    assert answer["outcomes"] == ["loan_submitted"], answer
    view = live_when(
        page,
        server,
        vid,
        lambda v: "loan_submitted" in names(v["outcomes"]) and v["currentPage"] == confirmation,
        "loan_submitted in the live view, on the confirmation page",
    )
    assert len(view["outcomes"]) == 1, view["outcomes"]
    achieved = view["outcomes"][0]
    assert achieved["name"] == "loan_submitted"
    assert achieved["value"] == amount  # valueFrom: amount, the amount entered
    assert view["startedAt"] <= achieved["achievedAt"] <= view["lastEventAt"]
    views_before = view["pageViews"]

    # 6. A reload of the confirmation page matches the outcome's condition again (its page
    # view is one of the two ways to achieve it), but a visit achieves an outcome once.
    count = len(answers.received)
    page.reload()
    page.get_by_text("Thank you").wait_for()
    answer = settled(page, answers, count)
    assert answer["outcomes"] == ["loan_submitted"], answer
    view = live_when(
        page,
        server,
        vid,
        lambda v: v["pageViews"] > views_before,
        "the reload's page view in the live view",
    )
    assert view["pageViews"] == views_before + 1
    assert view["outcomes"] == [achieved], view["outcomes"]
    for body in answers.bodies():
        assert body["outcomes"].count("loan_submitted") <= 1, body
    # The server did see both page views of the confirmation page, in one visit.
    sessions = server.sessions_of_visitor(vid)
    assert len(sessions) == 1, sessions
    stored = server.events_of_session(sessions[0]["id"])
    confirmations = [
        e for e in stored if e["type"] == "page_view" and "/demo/confirmation.html" in e["url"]
    ]
    assert len(confirmations) == 2, confirmations
    assert [e["name"] for e in stored if e["type"] == "custom"] == ["loan_submitted"]
    # Exactly the two failed attempts, one error each: the threshold was reached, not passed.
    errors = [(e["name"], e["data"]["message"]) for e in stored if e["type"] == "form_error"]
    assert errors == [
        ("loan", "Enter an amount between €1,000 and €50,000"),
        ("loan", "Enter an amount"),
    ], errors
    context.close()


def test_desktop_visitor_searching_device_activation(server: Any, desktop: Any) -> None:
    context = desktop.new_context(**DESKTOP)
    page = context.new_page()
    answers = Answers().attach(context)

    # A search for something else first: a search alone does not make the segment.
    page.goto(f"{server.base}/demo/search.html?q=loan")
    page.get_by_text("results for").wait_for()
    answer = settled(page, answers, 0)
    vid = visitor_id(context)
    assert answer["visitorId"] == vid
    assert "device-activation-searchers" not in answer["segments"], answer
    assert "device-activation-searchers" not in names(live(server, vid)["segments"])

    # Then the visitor types the words of the segment into the page's search box.
    count = len(answers.received)
    page.fill("#q", "Device activation")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url("**/demo/search.html?q=Device+activation")
    page.get_by_text("1 result for").wait_for()
    answer = settled(page, answers, count)
    assert "device-activation-searchers" in answer["segments"], answer
    assert "mobile-visitors" not in answer["segments"], answer
    view = live_when(
        page,
        server,
        vid,
        lambda v: "device-activation-searchers" in names(v["segments"]),
        "device-activation-searchers in the live view",
    )
    assert names(view["segments"]) == {"device-activation-searchers"}, view["segments"]
    assert view["currentPage"] == f"{server.base}/demo/search.html?q=Device+activation"
    assert view["outcomes"] == []
    assert [s["deviceType"] for s in server.sessions_of_visitor(vid)] == ["desktop"]
    searches = [e["query"] for e in server.events_of_visitor(vid) if e["type"] == "search"]
    assert searches == ["loan", "Device activation"]
    context.close()
