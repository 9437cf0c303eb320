"""The admin console in real headless Chromium against the real server: an admin signs in,
creates a segment (its audience estimated as it is typed) and an action map triggered by
it, sees a wrong document's errors beside the field that is wrong, finds both listed and
tests the map against a visitor driven through ``/v1/events``; a supervisor sees no button
that writes; hostile text stays text; a phone-width screen works. Every page is checked
for console errors (a CSP violation is one) and screenshotted into the test's folder.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opportune.store import users
from opportune.store.db import make_engine

pytestmark = pytest.mark.e2e

PASSWORD = "console e2e password"
HOSTILE = "<img src=x onerror=alert(1)>"
PHONES = "description: Phones\ncondition:\n  attribute: device\n  equals: mobile\n"
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(scope="module")
def server(serve: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server of this module's own: the segments and maps it creates must not reach the
    other modules' tests, which count the example workspace's."""
    with serve(tmp_path_factory.mktemp("console")) as s:
        yield s


@pytest.fixture(scope="module")
def people(server: Any) -> Iterator[dict[str, str]]:
    """An admin and a supervisor (emails by role)."""
    tag = secrets.token_hex(3)
    emails = {"admin": f"root-{tag}@console.test", "supervisor": f"sue-{tag}@console.test"}
    engine = make_engine(f"sqlite:///{server.log.parent / 'data' / 'opportune.db'}")
    with engine.begin() as conn:
        for role, email in emails.items():
            users.create_user(
                conn,
                email=email,
                name=f"{role.title()} {tag}",
                role=role,  # type: ignore[arg-type]
                password=PASSWORD,
                now_ms=int(time.time() * 1000),
            )
    engine.dispose()
    yield emails


def _sign_in(page: Any, server: Any, email: str, path: str) -> None:
    page.goto(f"{server.base}{path}")
    page.wait_for_url("**/agent/login?next=*")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")


def _visit(server: Any, visitor: str) -> None:
    t = int(time.time() * 1000)
    body = {
        "siteKey": "demo-site-key",
        "visitorId": visitor,
        "sentAt": t,
        "events": [{"id": "p1", "ts": t, "type": "page_view", "url": f"{server.base}/demo/"}],
    }
    r = httpx.post(
        f"{server.base}/v1/events",
        json=body,
        headers={"origin": server.base, "user-agent": PHONE},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def _type_document(page: Any, text: str) -> None:
    page.fill("#document", text)


def test_an_admin_creates_a_segment_and_an_action_map(
    watched: Callable[..., Any], server: Any, people: dict[str, str], tmp_path: Path
) -> None:
    tag = secrets.token_hex(2)
    segment, action_map, visitor = f"phones-{tag}", f"help-phones-{tag}", f"v-console-{tag}"
    ctx, page, problems = watched(viewport={"width": 1280, "height": 900})
    try:
        _sign_in(page, server, people["admin"], "/console")
        assert page.text_content("h1") == "Workspace"
        page.screenshot(path=str(tmp_path / "console-home.png"), full_page=True)

        # A segment, estimated while typed; first with a mistake, shown at its path.
        page.click(".console-tabs a[href='/console/segments']")
        page.click("#new-doc")
        page.wait_for_url("**/console/segments/_new")
        page.fill("#name", segment)
        _type_document(
            page, "description: Phones\ncondition:\n  attribute: devise\n  equals: mobile\n"
        )
        page.wait_for_function(
            "() => document.getElementById('estimate-result').textContent"
            ".startsWith('Cannot estimate')"
        )
        page.click("#save")
        error = page.locator("#document-errors li[data-path='condition.attribute']")
        assert "unknown attribute 'devise'" in error.text_content()
        # The error is beside the document field it is about.
        field = page.locator(".field", has=page.locator("#document"))
        assert field.locator("li[data-path='condition.attribute']").count() == 1
        assert page.get_attribute("#document", "aria-invalid") == "true"
        page.screenshot(path=str(tmp_path / "console-segment-error.png"), full_page=True)

        _type_document(
            page, "description: Phones\ncondition:\n  attribute: device\n  equals: mobile\n"
        )
        page.wait_for_function(
            "() => / of \\d+ visits/.test(document.getElementById('estimate-result').textContent)"
        )
        page.click("#save")
        page.wait_for_url(f"**/console/segments/{segment}?saved=1")
        assert page.is_visible("#saved")
        page.goto(f"{server.base}/console/segments")
        row = page.locator(f"#doc-list tr[data-name='{segment}']")
        assert "database" in row.text_content()
        page.screenshot(path=str(tmp_path / "console-segments.png"), full_page=True)

        # A bad name is named beside the name field.
        page.goto(f"{server.base}/console/action-maps/_new")
        page.fill("#name", "Not A Name")
        page.click("#save")
        assert page.is_visible("#error-name")
        assert page.locator(".field", has=page.locator("#name")).locator("#error-name").count() == 1

        # The action map, triggered by the new segment.
        page.fill("#name", action_map)
        _type_document(
            page,
            f"description: Help on phones\ntrigger:\n  segment: {segment}\npriority: 5\n"
            "action:\n  type: content\n  content:\n    title: Need a hand?\n"
            "    body: Our guide walks you through it.\n",
        )
        page.click("#save")
        page.wait_for_url(f"**/console/action-maps/{action_map}?saved=1")
        page.goto(f"{server.base}/console/action-maps")
        assert page.locator(f"#doc-list tr[data-name='{action_map}']").count() == 1

        # Tested against a phone visitor driven through /v1/events.
        _visit(server, visitor)
        page.goto(f"{server.base}/console/action-maps/{action_map}")
        page.fill("#visitor", visitor)
        page.click("#test button[type=submit]")
        page.wait_for_selector("#test-result")
        # The visitor's page view put them in the segment and the map offered at once.
        assert page.text_content("#test-result .tag") == "already engaged"
        history = page.locator("#test tbody tr td:first-child").all_text_contents()
        assert "offered" in history
        page.screenshot(path=str(tmp_path / "console-action-map.png"), full_page=True)

        page.goto(f"{server.base}/console/audit")
        names = page.locator(".audit-entry").evaluate_all(
            "es => es.map(e => e.dataset.action + ' ' + e.dataset.name)"
        )
        assert names[:2] == [f"create {action_map}", f"create {segment}"]
        page.screenshot(path=str(tmp_path / "console-audit.png"), full_page=True)
        for path in (
            "/console/outcomes/loan_submitted",
            "/console/routing",
            "/console/users",
            "/console/transfer",
            "/console/queues",
            "/console/content-offers",
        ):
            page.goto(f"{server.base}{path}")
            page.screenshot(path=str(tmp_path / f"console{path.replace('/', '-')}.png"))
        # The two refused forms answered 422 (the page again, with the errors); nothing else.
        refused = "error: Failed to load resource: the server responded with a status of 422"
        assert [p for p in problems if not p.startswith(refused)] == []
        assert len(problems) == 2
    finally:
        ctx.close()


def test_a_supervisor_sees_no_write_buttons(
    watched: Callable[..., Any], server: Any, people: dict[str, str], tmp_path: Path
) -> None:
    ctx, page, problems = watched()
    try:
        _sign_in(page, server, people["supervisor"], "/console/segments")
        assert page.is_visible("#read-only-note")
        assert page.locator("#new-doc").count() == 0
        for path in ("/console/segments", "/console/segments/mobile-visitors",
                     "/console/outcomes/loan_submitted", "/console/action-maps/travel-notice",
                     "/console/users", "/console/transfer", "/console/kpis"):  # fmt: skip
            page.goto(f"{server.base}{path}")
            posting = page.locator("main form[method=post]").count()
            assert posting == 0, path
            assert page.locator("#save, #delete, #retrain, #import-form").count() == 0, path
        page.screenshot(path=str(tmp_path / "console-supervisor.png"), full_page=True)
        assert problems == []
    finally:
        ctx.close()


def test_hostile_text_is_shown_as_text_on_a_phone(
    watched: Callable[..., Any], server: Any, people: dict[str, str], tmp_path: Path
) -> None:
    name = f"hostile-{secrets.token_hex(2)}"
    body = {"description": HOSTILE, "condition": {"attribute": "device", "equals": "mobile"}}
    r = httpx.put(f"{server.base}/v1/segments/{name}", json=body,
                  headers={"X-API-Key": server.api_key}, timeout=10)  # fmt: skip
    assert r.status_code == 200, r.text
    ctx, page, problems = watched(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        _sign_in(page, server, people["admin"], "/console/segments")
        row = page.locator(f"#doc-list tr[data-name='{name}']")
        assert HOSTILE in row.text_content()
        assert page.locator("img[src=x]").count() == 0
        page.goto(f"{server.base}/console/segments/{name}")
        assert HOSTILE in page.input_value("#document")
        page.goto(f"{server.base}/console/action-maps/travel-notice?visitor={HOSTILE}")
        assert HOSTILE in page.text_content("#test-error")
        for path in ("/console", "/console/segments", "/console/users", "/console/audit"):
            page.goto(f"{server.base}{path}")
            page.screenshot(path=str(tmp_path / f"console-phone{path.replace('/', '-')}.png"))
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        assert page.locator("img[src=x]").count() == 0
        assert problems == []
    finally:
        ctx.close()
