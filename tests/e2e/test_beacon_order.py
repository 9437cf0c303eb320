"""The order the snippet recorded a visitor's events in is the order they are stored in,
in real Chromium against the real server:

- two batches sent close together whose clock corrections differ (the first held on the
  network, so it arrives late and the server's ``now − sentAt`` for it is large) keep their
  events' recorded order;
- a route change a moment before the page is left (10 ms: before the snippet's 50 ms wait
  for the app to set its title) is still recorded and sent on the way out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
OUTBOX_KEY = "opp_outbox:demo-site-key"


def wait_until(page: Any, check: Callable[[], Any], timeout: float = 15, what: str = "") -> Any:
    """Poll ``check`` with the page's timer (route handlers run only inside Playwright
    calls) until it is truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(100)
    return value


def drain(page: Any) -> None:
    """Ask the snippet to send now and wait until its stored outbox is empty."""
    page.wait_for_function("() => window.opportune && window.opportune.loaded")
    page.evaluate("opportune('flush')")
    page.wait_for_function(f"() => localStorage.getItem({OUTBOX_KEY!r}) === null")


def visitor_id(context: Any) -> str:
    return str(next(c["value"] for c in context.cookies() if c["name"] == "opp_vid"))


def page_views(server: Any, vid: str) -> list[str]:
    """The visitor's stored page views, in stored order (by time), as paths under /demo/."""
    return [
        e["url"].split("/demo/")[1]
        for e in server.events_of_visitor(vid)
        if e["type"] == "page_view"
    ]


def test_batches_with_different_clock_corrections_keep_the_recorded_order(
    server: Any, browser: Any
) -> None:
    context = browser.new_context()
    page = context.new_page()
    held: list[Any] = []

    def route(r: Any) -> None:
        # The first batch (the landing page view) is held on the network; the rest pass.
        if not held and r.request.method == "POST":
            held.append(r)
        else:
            r.continue_()

    page.route("**/v1/events", route)
    page.goto(f"{server.base}/demo/help.html")
    wait_until(page, lambda: held, what="the first batch to be sent")
    # Recorded after the landing page view, sent in a batch of its own once the first
    # is answered (one request in flight at a time).
    page.get_by_role("link", name="Device activation").click()
    page.get_by_role("heading", name="Device activation").wait_for()
    page.wait_for_timeout(1500)  # the first batch arrives 1.5 s late
    held[0].continue_()
    drain(page)
    vid = visitor_id(context)
    views = wait_until(
        page,
        lambda: page_views(server, vid) if len(page_views(server, vid)) == 2 else None,
        what="both page views stored",
    )
    assert views == ["help.html", "help.html?article=device"]
    context.close()


def test_a_route_change_just_before_leaving_the_page_is_stored(server: Any, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.base}/demo/help.html")
    drain(page)
    vid = visitor_id(context)
    page.evaluate(
        """() => {
          history.pushState({article: 'repayment'}, '', '?article=repayment');
          setTimeout(() => { location.href = 'product.html'; }, 10);
        }"""
    )
    page.wait_for_url("**/product.html")
    drain(page)
    expected = ["help.html", "help.html?article=repayment", "product.html"]
    views = wait_until(
        page,
        lambda: page_views(server, vid) if len(page_views(server, vid)) >= 3 else None,
        what="the three page views stored",
    )
    assert views == expected
    context.close()
