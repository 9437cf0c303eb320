"""The reports in real headless Chromium against the real server: a supervisor signs in from
the redirect, every report's charts are drawn (canvases with a size), nothing is logged to
the console, a CSV link downloads, an agent is refused, and a phone-width screen is usable.

Users are made with ``store/users.py`` on the server's database; the traffic goes in through
``/v1/events`` and the routing API. Screenshots go to the test's temporary folder.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opportune.api.reports import TITLES
from opportune.store import users
from opportune.store.db import make_engine

pytestmark = pytest.mark.e2e

PASSWORD = "reports e2e password"
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(scope="module")
def people(server: Any) -> Iterator[dict[str, str]]:
    """A supervisor and an agent (emails by role), and a little traffic to report on."""
    tag = secrets.token_hex(3)
    emails = {"supervisor": f"sue-{tag}@reports.test", "agent": f"ana-{tag}@reports.test"}
    engine = make_engine(f"sqlite:///{server.log.parent / 'data' / 'opportune.db'}")
    with engine.begin() as conn:
        for role, email in emails.items():
            users.create_user(
                conn,
                email=email,
                name=f"{role.title()} <b>{tag}</b>",
                role=role,  # type: ignore[arg-type]
                password=PASSWORD,
                now_ms=int(time.time() * 1000),
                agent_id=f"rep-agent-{tag}" if role == "agent" else None,
            )
    engine.dispose()
    for i, ua in enumerate([PHONE, PHONE, "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"]):
        t = int(time.time() * 1000)
        body = {
            "siteKey": "demo-site-key",
            "visitorId": f"rep-{tag}-{i}",
            "sentAt": t,
            "events": [
                {"id": "p1", "ts": t, "type": "page_view", "url": f"{server.base}/demo/"},
                {"id": "s1", "ts": t, "type": "search", "query": "device activation"},
            ],
        }
        r = httpx.post(
            f"{server.base}/v1/events",
            json=body,
            headers={"origin": server.base, "user-agent": ua},
            timeout=10,
        )
        assert r.status_code == 200, r.text
    key = {"X-API-Key": server.api_key}
    r = httpx.post(
        f"{server.base}/v1/interactions",
        json={"id": f"rep-i-{tag}", "queue": "support"},
        headers=key,
        timeout=10,
    )
    assert r.status_code == 201, r.text
    yield emails


def _sign_in(page: Any, server: Any, email: str, path: str) -> None:
    page.goto(f"{server.base}{path}")  # not signed in: the sign-in form, then back here
    page.wait_for_url("**/agent/login?next=*")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")


def _charts_drawn(page: Any) -> list[dict[str, float]]:
    page.wait_for_function("window.opportuneCharts !== undefined")
    return page.evaluate(
        """() => [...document.querySelectorAll('.chart canvas')].map(c => {
            const r = c.getBoundingClientRect();
            return {w: r.width, h: r.height, px: c.width};
        })"""
    )


def test_a_supervisor_reads_every_report_with_charts(
    watched: Callable[..., Any], server: Any, people: dict[str, str], tmp_path: Path
) -> None:
    ctx, page, problems = watched(viewport={"width": 1280, "height": 900})
    try:
        _sign_in(page, server, people["supervisor"], "/reports/visitors?tz=Europe/Madrid")
        page.wait_for_url("**/reports/visitors?tz=Europe/Madrid")
        assert page.text_content("h1") == "Visitor activity"
        assert page.locator(".me").text_content().startswith("Supervisor <b>")  # as text
        drawn = _charts_drawn(page)
        assert len(drawn) == 3 and all(c["w"] > 200 and c["h"] > 100 and c["px"] > 0 for c in drawn)
        devices = page.locator("#table-devices tbody tr").all_text_contents()
        assert any("mobile" in d for d in devices)
        page.screenshot(path=str(tmp_path / "reports-visitors.png"), full_page=True)

        with page.expect_download() as got:
            page.locator("#table-devices a.csv").click()
        text = Path(got.value.path()).read_text()
        assert text.splitlines()[0] == "device,visits,share" and "mobile," in text
        assert got.value.suggested_filename.startswith("opportune-visitors-devices-")

        for name in TITLES:
            page.locator(f".report-tabs a[href^='/reports/{name}?']").click()
            page.wait_for_url(f"**/reports/{name}?*")
            drawn = _charts_drawn(page)
            assert drawn and all(c["w"] > 100 and c["h"] > 100 for c in drawn), name
            assert "tz=Europe%2FMadrid" in page.url
            page.screenshot(path=str(tmp_path / f"reports-{name}.png"), full_page=True)

        # The filters: a range by hour in another zone.
        page.goto(f"{server.base}/reports/visitors")
        page.fill("#tz", "Asia/Kolkata")
        page.select_option("#interval", "hour")
        page.click(".report-filters button[type=submit]")
        page.wait_for_url("**interval=hour*")
        assert page.locator("#table-overTime tbody tr").first.text_content().count("+05:30") == 1
        assert problems == []
    finally:
        ctx.close()


def test_an_agent_is_refused(
    watched: Callable[..., Any], server: Any, people: dict[str, str]
) -> None:
    ctx, page, _problems = watched()
    try:
        _sign_in(page, server, people["agent"], "/reports/visitors")
        page.wait_for_url("**/reports/visitors")
        response = page.request.get(f"{server.base}/reports/visitors")
        assert response.status == 403
        assert page.locator("canvas").count() == 0
    finally:
        ctx.close()


def test_a_phone_screen_scrolls_tables_not_the_page(
    watched: Callable[..., Any], server: Any, people: dict[str, str], tmp_path: Path
) -> None:
    ctx, page, problems = watched(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        _sign_in(page, server, people["supervisor"], "/reports/queues")
        page.wait_for_url("**/reports/queues")
        drawn = _charts_drawn(page)
        assert drawn and all(0 < c["w"] <= 390 for c in drawn)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing pushes the page sideways
        wrap = page.locator("#table-queues .table-wrap")
        inner, outer = wrap.evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert inner > outer  # the wide table scrolls inside its box
        assert page.is_visible("#from") and page.is_visible(".report-filters button")
        page.screenshot(path=str(tmp_path / "reports-phone.png"), full_page=True)
        assert problems == []
    finally:
        ctx.close()
