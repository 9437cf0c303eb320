"""context.js in Chromium against the real app served over HTTP (uvicorn in a thread): the
panel draws who, the timeline and why this agent; a hostile search is shown as text (no
element made, no script run); a later event appears by itself; the CRM panel creates,
finds and updates the lead in the demo's stand-in CRM (/demo/crm/leads on the same server).

The workspace page includes the script; here a tiny page does, signed in by the same
session cookie and CSRF token (api/people.py).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from fastapi import Request
from starlette.responses import HTMLResponse

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.core.conversations import draft
from opportune.settings import Settings
from opportune.store import conversations as conv_store
from opportune.store import interactions as inter_store
from opportune.store import users

HOSTILE = "<img src=x onerror=alert(1)>"
COOKIE = "opportune_session"
PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="csrf-token" content="test-csrf">
<link rel="stylesheet" href="/agent/static/context.css"></head>
<body><div id="context"></div>
<script src="/agent/static/context.js"></script>
<script>OpportuneContext.render(document.getElementById('context'), 'c1', {refreshMs: 300});
</script></body></html>"""


def _now() -> int:
    return int(time.time() * 1000)


def _csrf(rt: Any, token: str | None) -> str:
    """The CSRF token of a session, as the workspace's page carries it."""
    with rt.ingestor.engine.begin() as conn:
        session = users.session_of(conn, token, now_ms=_now())
    assert session is not None
    return session.csrf


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    tmp = tmp_path_factory.mktemp("ctx")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ws = tmp / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    doc = yaml.safe_load((ws / "sites.yaml").read_text())
    doc["origins"] = [f"http://127.0.0.1:{port}"]
    (ws / "sites.yaml").write_text(yaml.safe_dump(doc))
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'db.sqlite'}",
        workspace=ws,
        data_dir=tmp / "data",
        api_key="k",
        retrain_interval_h=0,
    )
    # The app serves the context router (signed in by api/people.py) and the static files.
    app = create_app(settings)
    inner = app.app
    rt = inner.state.runtime

    @inner.get("/test-page")
    async def test_page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.replace("test-csrf", _csrf(rt, request.cookies.get(COOKIE))))

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield base, rt
    server.should_exit = True
    thread.join(timeout=15)


def _events(base: str, *events: dict[str, Any]) -> None:
    body = {"siteKey": "demo-site-key", "visitorId": "v1", "sentAt": _now(), "events": list(events)}
    r = httpx.post(f"{base}/v1/events", json=body, headers={"origin": base}, timeout=10)
    assert r.status_code == 200, r.text


def _setup(base: str, rt: Any, cid: str = "c1", email: str = "dev@bank.example") -> str:
    t = _now()
    _events(
        base,
        {"id": f"p{cid}", "ts": t - 3000, "type": "page_view", "url": f"{base}/demo/index.html"},
        {"id": f"s{cid}", "ts": t - 2000, "type": "search", "query": HOSTILE},
        {
            "id": f"i{cid}",
            "ts": t - 1000,
            "type": "identify",
            "identity": {"email": "ana@example.com"},
        },
    )
    engine = rt.ingestor.engine
    with engine.begin() as conn:
        conv_store.open_conversation(
            conn,
            conversation_id=cid,
            site_id="demo",
            visitor_id="v1",
            customer_id=None,
            state="bot",
            now_ms=t,
            queue="support",
            registration={"firstName": HOSTILE},
        )
        conv_store.append(conn, cid, draft("m1", "visitor", HOSTILE), now_ms=t + 1)
        conv_store.append(conn, cid, draft("b1", "bot", "Let me find a person"), now_ms=t + 2)
        conv_store.transition(conn, cid, "escalate", now_ms=t + 3)
        inter_store.insert(
            conn,
            inter_store.NewInteraction(cid, "support", "chat", "predictive", {}),
            now_ms=t + 3,
        )
        inter_store.assign(
            conn,
            inter_store.Assignment(
                "c1", "dev", "predictive", 0.9, "best", [("dev", 0.81)], ["dev"]
            ),
            now_ms=t + 4,
        )
        conv_store.transition(conn, cid, "route", now_ms=t + 4, agent_id="dev")
        user = users.create_user(
            conn,
            email=email,
            name="Dev Patel",
            role="agent" if email.startswith("dev@") else "admin",
            password="a long password",
            now_ms=t,
            agent_id="dev" if email.startswith("dev@") else None,
        )
        token, _ = users.start_session(conn, user, now_ms=t)
    return token


def test_the_panel_in_chromium(site: tuple[str, Any], browser: Any) -> None:
    base, rt = site
    token = _setup(base, rt)
    context = browser.new_context()
    context.add_cookies([{"name": COOKIE, "value": token, "url": base}])
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{base}/test-page")
    panel = page.locator("#context")
    search = panel.locator(".oc-kind-search .oc-text").first
    search.wait_for(timeout=15_000)
    assert search.text_content() == f"searched for '{HOSTILE}'"
    assert panel.locator("img").count() == 0  # the visitor's markup stayed text
    assert panel.locator(".oc-name").text_content() == HOSTILE
    assert HOSTILE in panel.locator(".oc-transcript").text_content()
    assert "predictive routing" in panel.locator(".oc-routing-text").text_content()

    # A later event of the visit shows up without a reload.
    _events(base, {"id": "s2", "ts": _now(), "type": "search", "query": "travel notice"})
    panel.locator(".oc-text", has_text="searched for 'travel notice'").wait_for(timeout=15_000)

    # The CRM panel: create, find, update in the demo's stand-in CRM.
    panel.locator(".oc-crm-notes").fill("wants a card")
    panel.locator("button.oc-crm-create").click()
    result = panel.locator(".oc-crm-result")
    result.locator(".oc-crm-said", has_text="Lead created").wait_for(timeout=15_000)
    panel.locator("button.oc-crm-lookup").click()
    result.locator(".oc-crm-said", has_text="Lead found").wait_for(timeout=15_000)
    panel.locator(".oc-crm-status").fill("qualified")
    panel.locator("button.oc-crm-update").click()
    result.locator(".oc-crm-said", has_text="Lead updated").wait_for(timeout=15_000)
    assert "qualified" in result.text_content()
    # The visitor signed in after the chat began: the lead still carries their email.
    assert "ana@example.com" in result.text_content()
    assert dialogs == []

    # Only the open chat is followed: once the panel leaves the page, no more requests.
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/context" in r.url else None)
    page.evaluate("document.getElementById('context').remove()")
    page.wait_for_timeout(300 * 5)  # a refresh in flight at the removal ends here
    before = len(asked)
    page.wait_for_timeout(300 * 5)
    assert len(asked) == before
    context.close()


def test_a_crm_path_is_called_on_this_server_whatever_host_the_client_names(
    site: tuple[str, Any],
) -> None:
    """The demo CRM's address is a path: it is called on the socket this server listens on,
    not on the request's Host (a client could name its own host there and collect the
    CRM's secrets)."""
    base, rt = site
    token = _setup(base, rt, "c9", "dev2@bank.example")
    r = httpx.post(
        f"{base}/agent/api/conversations/c9/crm",
        json={"operation": "lookup"},
        headers={
            "cookie": f"{COOKIE}={token}",
            "x-csrf-token": _csrf(rt, token),
            "host": "attacker.invalid:1",
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["ok"], r.json()
