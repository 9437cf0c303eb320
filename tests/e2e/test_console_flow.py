"""Issue 15's whole loop in real headless Chromium against a server of this module's own:
an admin signs in, makes a segment and an action map (a content offer) in the console's
forms; with Live Now open, two visitors (each a browser context of their own) use the
demo bank's real pages: the first lands, shows up in Live Now, searches, is offered the
guide by the widget and takes it, while the segment's chip appears on their row without
a reload; the second searches too and turns the offer down. The admin opens the first
visitor's journey map (segment entered, offer offered and accepted) and reads the action
map report, page and JSON, whose figures for the new map are exactly what the two
visitors did. Every page is checked for console errors (a CSP violation is one) and
screenshotted into the test's folder.

The server is this module's own so that the report counts nothing but this test's
visitors. Nothing is intercepted: the snippet, the widget and the server decide for real.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opportune.store import users
from opportune.store.db import make_engine

pytestmark = pytest.mark.e2e

PASSWORD = "console flow e2e password"
WORDS = "overpayment calculator"  # what the visitors search for (no example map's words)
TITLE = "Pay your loan off sooner"
BODY = "See how much an overpayment each month saves you in interest."
CTA = "Work it out"


@pytest.fixture(scope="module")
def own_server(
    serve: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A server for this module alone: its reports count only this module's visitors."""
    with serve(tmp_path_factory.mktemp("console-flow")) as s:
        yield s


@pytest.fixture(scope="module")
def admin_email(own_server: Any) -> str:
    email = f"root-{secrets.token_hex(3)}@flow.test"
    engine = make_engine(f"sqlite:///{own_server.log.parent / 'data' / 'opportune.db'}")
    with engine.begin() as conn:
        users.create_user(
            conn, email=email, name="Flow Admin", role="admin", password=PASSWORD,
            now_ms=int(time.time() * 1000),
        )  # fmt: skip
    engine.dispose()
    return email


class Watched:
    """One browser context and its page, with every console error or warning, page error
    and dialog it showed, and a screenshot per page visited."""

    def __init__(self, browser: Any, folder: Path, who: str, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.folder, self.who = folder, who
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on(
            "dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss())
        )

    def _console(self, m: Any) -> None:
        if m.type in ("error", "warning"):
            self.problems.append(f"{m.type}: {m.text} ({self.page.url})")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.folder / f"{self.who}-{name}.png"), full_page=True)

    def assert_clean(self) -> None:
        assert self.problems == [], f"{self.who}: {self.problems}"


def wait_until(page: Any, check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """Poll ``check`` (with the page's timer, so Playwright's events keep flowing) until
    it gives something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(100)


def history(server: Any, visitor: str, action_map: str) -> list[str]:
    """The map's states in the visitor's visit, as the server recorded them."""
    maps = {m["name"]: m for m in server.api(f"/v1/visitors/{visitor}/explain")["maps"]}
    return [h["state"] for h in maps[action_map]["history"]] if action_map in maps else []


def map_row(report: dict[str, Any], action_map: str) -> dict[str, Any]:
    table = report["tables"]["maps"]
    rows = [dict(zip(table["columns"], r, strict=True)) for r in table["rows"]]
    mine = [r for r in rows if r["map"] == action_map]
    assert len(mine) == 1, rows
    return mine[0]


def visitor(browser: Any, server: Any, folder: Path, who: str) -> tuple[Watched, str]:
    """A new visitor: a browser context of its own whose snippet id is known beforehand."""
    w = Watched(browser, folder, who, viewport={"width": 1280, "height": 800}, locale="en-GB")
    vid = uuid.uuid4().hex  # the snippet's own form of id, kept from its cookie
    w.context.add_cookies([{"name": "opp_vid", "value": vid, "url": server.base}])
    return w, vid


def search(w: Watched, words: str) -> None:
    """The visitor types ``words`` into the header's search box and presses Go."""
    box = w.page.locator(".top-search input[name=q]")
    box.fill(words)
    w.page.locator(".top-search button[type=submit]").click()
    w.page.wait_for_url(re.compile(r".*/demo/search\.html\?q=.+"))
    w.page.get_by_text("for “").wait_for()  # the page's result summary


def test_a_segment_and_map_made_in_the_console_offer_live_and_report_exactly(
    browser: Any, own_server: Any, admin_email: str, tmp_path: Path
) -> None:
    server = own_server
    tag = secrets.token_hex(2)
    segment, action_map = f"overpayment-searchers-{tag}", f"overpayment-guide-{tag}"
    admin = Watched(browser, tmp_path, "admin", viewport={"width": 1400, "height": 900})
    watched = [admin]
    try:
        # -- the admin signs in and makes the segment and the map in the console -------------
        page = admin.page
        page.goto(f"{server.base}/console")
        page.wait_for_url("**/agent/login?next=*")
        admin.shot("login")
        page.fill("#email", admin_email)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/console")
        assert page.text_content("h1") == "Workspace"
        admin.shot("console")

        page.click(".console-tabs a[href='/console/segments']")
        page.wait_for_url("**/console/segments")
        page.click("#new-doc")
        page.wait_for_url("**/console/segments/_new")
        page.fill("#name", segment)
        page.fill(
            "#document",
            f"description: Searched for a loan overpayment calculator\n"
            f'colour: "#3b6fb6"\ncondition:\n  searched: [{WORDS}]\n',
        )
        page.wait_for_function(
            "() => / of \\d+ visits/.test(document.getElementById('estimate-result').textContent)"
        )
        admin.shot("segment-new")
        page.click("#save")
        page.wait_for_url(f"**/console/segments/{segment}?saved=1")
        assert page.is_visible("#saved")

        page.goto(f"{server.base}/console/action-maps")
        page.click("#new-doc")
        page.wait_for_url("**/console/action-maps/_new")
        page.fill("#name", action_map)
        page.fill(
            "#document",
            f"description: Overpayment searchers get the calculator guide\n"
            f"trigger:\n  segment: {segment}\npriority: 30\n"
            f"action:\n  type: content\n  content:\n    title: {TITLE}\n    body: {BODY}\n"
            f"    cta: {{label: {CTA}, url: /demo/product.html}}\n    layout: slide-in\n",
        )
        admin.shot("action-map-new")
        page.click("#save")
        page.wait_for_url(f"**/console/action-maps/{action_map}?saved=1")
        assert page.is_visible("#saved")
        admin.shot("action-map-saved")
        page.goto(f"{server.base}/console/action-maps")
        assert "database" in page.locator(f"#doc-list tr[data-name='{action_map}']").text_content()

        # -- Live Now open while the first visitor arrives -----------------------------------
        page.goto(f"{server.base}/live")
        page.wait_for_function("() => window.opportuneLive !== undefined")
        page.wait_for_function(
            "() => document.getElementById('live-status').textContent.startsWith('Live')"
        )
        page.evaluate("() => { window.__samePage = true; }")  # gone if the page reloads
        admin.shot("live-empty")

        ana, ana_id = visitor(browser, server, tmp_path, "visitor-1")
        watched.append(ana)
        ana.page.goto(f"{server.base}/demo/")
        ana.page.get_by_role("heading", level=1).wait_for()
        row = page.locator(f"#rows .live-row[data-visitor='{ana_id}']")
        row.wait_for(timeout=15_000)  # a delta brings the new visitor
        assert row.locator(".chip", has_text=segment).count() == 0  # not searched yet
        assert "/demo/" in row.locator(".c-page").text_content()
        ana.shot("home")

        # She searches: the segment and the map decide at once, the widget shows the offer.
        search(ana, WORDS)
        offer = ana.page.get_by_role("complementary", name=TITLE)
        offer.wait_for(timeout=15_000)
        offer.hover()  # pointing at an offer stops its timeout: she is reading it
        assert offer.get_by_text(BODY).is_visible()
        # A map with no template of its own wears the site's look (the bank's green).
        colour = offer.get_by_role("link", name=CTA).evaluate(
            "e => getComputedStyle(e).backgroundColor"
        )
        assert colour == "rgb(11, 110, 79)", colour  # sites.yaml widget.theme.primary #0b6e4f
        ana.shot("offer")

        # Meanwhile Live Now: the chip appears on her row, the offer shows, no reload.
        chip = row.locator(".chip", has_text=segment)
        chip.wait_for(timeout=15_000)
        assert chip.text_content() == segment
        # In the colour the console gave the segment (#3b6fb6).
        chip_colour = chip.evaluate("e => getComputedStyle(e).backgroundColor")
        assert chip_colour == "rgb(59, 111, 182)", chip_colour
        page.wait_for_function(
            "([id, map]) => { const r = document.querySelector("
            "`#rows .live-row[data-visitor='${id}'] .c-offer`);"
            " return r && r.textContent === `${map} (content)`; }",
            arg=[ana_id, action_map],
            timeout=15_000,
        )
        assert page.evaluate("() => window.__samePage") is True
        assert page.text_content("#count-offers") == "1"
        admin.shot("live-chip")

        # She takes it: the call to action reports `accepted` and goes to its page.
        offer.get_by_role("link", name=CTA).click()
        ana.page.wait_for_url("**/demo/product.html")
        wait_until(
            ana.page,
            lambda: "accepted" in history(server, ana_id, action_map),
            "her `accepted` recorded",
        )
        assert history(server, ana_id, action_map) == [
            "qualified",
            "offered",
            "offered",
            "accepted",
        ]
        ana.shot("accepted")

        # -- a second visitor searches the same and turns it down ---------------------------
        ben, ben_id = visitor(browser, server, tmp_path, "visitor-2")
        watched.append(ben)
        ben.page.goto(f"{server.base}/demo/search.html?q={WORDS.replace(' ', '+')}")
        offer2 = ben.page.get_by_role("complementary", name=TITLE)
        offer2.wait_for(timeout=15_000)
        ben.shot("offer")
        offer2.get_by_role("button", name="No thanks").click()
        offer2.wait_for(state="detached")
        wait_until(
            ben.page,
            lambda: "rejected" in history(server, ben_id, action_map),
            "his `rejected` recorded",
        )
        assert history(server, ben_id, action_map) == [
            "qualified",
            "offered",
            "offered",
            "rejected",
        ]
        page.locator(f"#rows .live-row[data-visitor='{ben_id}'] .chip", has_text=segment).wait_for(
            timeout=15_000
        )

        # -- the first visitor's journey map, opened from her row ----------------------------
        row.click()
        page.wait_for_url(f"**/live/visitors/{ana_id}")
        assert ana_id in page.text_content("h1")
        journey = page.locator(".journey")
        said = [t.strip() for t in journey.locator("li").all_text_contents()]
        searched = [t for t in said if f"searched for '{WORDS}'" in t]
        entered = journey.locator("li.j-segment").all_text_contents()
        offered = journey.locator("li.j-offer.j-offered").all_text_contents()
        accepted = journey.locator("li.j-offer.j-accepted").all_text_contents()
        assert len(searched) == 1, said
        human_segment = segment.replace("-", " ")
        assert [t for t in entered if f"entered the segment '{human_segment}'" in t], said
        human_map = action_map.replace("-", " ")
        assert offered and all(f"was offered '{human_map}'" in t for t in offered), said
        assert len(accepted) == 1 and f"accepted '{human_map}'" in accepted[0], said
        assert journey.locator("li.j-offer.j-rejected").count() == 0  # that was the other one
        # In that order: the search, the segment it put her in, the offer, her answer.
        order = [said.index(searched[0])] + [
            next(i for i, t in enumerate(said) if t.strip() == x.strip())
            for x in (entered[0], offered[0], accepted[0])
        ]
        assert order == sorted(order), said
        assert human_segment in page.locator(".chips").text_content()
        admin.shot("journey")

        # -- the action map report: exactly what the two visitors did -----------------------
        # Both answers are recorded (polled above); the report is read until it has them,
        # then must hold exactly them and nothing more.
        def report_row() -> dict[str, Any] | None:
            row = map_row(server.api("/v1/reports/action-maps"), action_map)
            return row if row["accepted"] + row["rejected"] >= 2 else None

        wait_until(page, report_row, "the report to count both answers")
        report = server.api("/v1/reports/action-maps")
        assert map_row(report, action_map) == {
            "map": action_map, "channel": "content", "qualified": 2, "heldOut": 0,
            "blocked": 0, "blockedVisits": 0, "offered": 2, "offeredPct": 1.0,
            "accepted": 1, "acceptedPct": 0.5, "engaged": 0, "engagedPct": 0.0,
            "rejected": 1, "timedOut": 0, "outcomesAttributed": 0,
        }  # fmt: skip
        # No other map offered anything to these two.
        columns = report["tables"]["maps"]["columns"]
        others = [r for r in report["tables"]["maps"]["rows"] if r[0] != action_map]
        assert all(r[columns.index("offered")] == 0 for r in others), others
        offers = server.api("/v1/reports/content-offers")["tables"]["offers"]
        assert map_row({"tables": {"maps": offers}}, action_map) == {
            "map": action_map, "offered": 2, "clicked": 1, "dismissed": 1, "timedOut": 0,
            "clickThrough": 0.5,
        }  # fmt: skip

        # The same figures on the report's page, in its table and chart.
        page.goto(f"{server.base}/reports/action-maps")
        page.wait_for_function("window.opportuneCharts !== undefined")
        assert page.locator(".chart canvas").count() >= 1
        heads = page.locator("#table-maps thead th").all_text_contents()
        line = page.locator("#table-maps tbody tr", has=page.locator(
            "td:first-child", has_text=re.compile(f"^{re.escape(action_map)}$")
        ))  # fmt: skip
        assert line.count() == 1
        shown = dict(zip(heads, line.locator("td").all_text_contents(), strict=True))
        assert shown["channel"] == "content"
        assert (shown["qualified"], shown["offered"], shown["accepted"]) == ("2", "2", "1"), shown
        assert (shown["rejected"], shown["timedOut"], shown["blocked"]) == ("1", "0", "0"), shown
        admin.shot("report-action-maps")

        for w in watched:
            w.assert_clean()
    finally:
        for w in watched:
            w.context.close()
