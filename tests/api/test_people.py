"""Signing in to the agent workspace on SQLite and PostgreSQL: the cookie, wrong passwords,
expired and forged sessions, CSRF on every write, and a denial at every role boundary of
every /agent route."""

from __future__ import annotations

import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.api.people import COOKIE
from opportune.core.conversations import draft
from opportune.settings import Settings
from opportune.store import conversations as chats
from opportune.store import users
from opportune.store.interactions import agent_states

PASSWORD = "correct horse battery"
PEOPLE = {
    # email: (role, agent, supervised queues)
    "ana@bank.test": ("agent", "ana", ()),  # loans and support (her skills)
    "ben@bank.test": ("agent", "ben", ()),  # loans only
    "sue@bank.test": ("supervisor", None, ("loans",)),
    "root@bank.test": ("admin", None, ()),
}


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    settings = Settings(database_url=db_url, workspace=ws, data_dir=tmp_path, api_key="k")
    app = create_app(settings)
    with TestClient(app) as c:
        engine = app.app.state.runtime.ingestor.engine
        now = _now()
        with engine.begin() as conn:
            for email, (role, agent, queues) in PEOPLE.items():
                users.create_user(
                    conn,
                    email=email,
                    name=email.split("@")[0].title(),
                    role=role,  # type: ignore[arg-type]
                    password=PASSWORD,
                    now_ms=now,
                    agent_id=agent,
                    queues=queues,
                )
            # A loans chat routed to ana, a support chat routed to ana, a loans chat waiting.
            _chat(conn, "c-loans", "loans", agent="ana")
            _chat(conn, "c-support", "support", agent="ana")
            _chat(conn, "c-waiting", "loans", agent=None)
        c.engine = engine  # type: ignore[attr-defined]
        yield c


def _now() -> int:
    return int(time.time() * 1000)


def _chat(conn: Any, cid: str, queue: str, *, agent: str | None) -> None:
    now = _now()
    chats.open_conversation(
        conn,
        conversation_id=cid,
        site_id="demo",
        visitor_id=f"v-{cid}",
        customer_id=None,
        state="queued",
        now_ms=now,
        queue=queue,
        language="en",
        registration={"name": "<img src=x onerror=alert(1)>"},
    )
    chats.append(conn, cid, draft("m1", "visitor", "<script>alert(1)</script>"), now_ms=now)
    if agent is not None:
        chats.transition(conn, cid, "route", now_ms=now, agent_id=agent)
        chats.transition(conn, cid, "accept", now_ms=now)


def _login_csrf(c: TestClient) -> str:
    r = c.get("/agent/login")
    assert r.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]


def sign_in(c: TestClient, email: str, password: str = PASSWORD, **extra: str) -> Any:
    token = _login_csrf(c)
    form = {"csrf": token, "email": email, "password": password, **extra}
    return c.post("/agent/login", data=form, follow_redirects=False)


def signed_in(c: TestClient, email: str) -> str:
    """Sign ``email`` in on client ``c``; the session's CSRF token."""
    r = sign_in(c, email)
    assert r.status_code == 303, r.text
    page = c.get("/agent")
    assert page.status_code == 200
    return re.search(r'"csrf": "([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def test_signing_in_sets_a_script_proof_same_site_cookie(client: TestClient) -> None:
    r = sign_in(client, " ANA@bank.test ", next="/agent?x=1")
    assert r.status_code == 303 and r.headers["location"] == "/agent?x=1"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    page = client.get("/agent")
    assert page.status_code == 200 and "Ana García" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    # Signed in, the sign-in page sends the person on.
    again = client.get("/agent/login", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/agent"


def test_the_cookie_is_secure_over_https(client: TestClient) -> None:
    secure = TestClient(client.app, base_url="https://testserver")
    r = sign_in(secure, "ana@bank.test")
    assert r.status_code == 303
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(COOKIE))
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_a_wrong_password_or_email_gets_one_generic_answer(client: TestClient) -> None:
    wrong_pw = sign_in(client, "ana@bank.test", "not the password")
    unknown = sign_in(client, "nobody@bank.test", PASSWORD)
    for r in (wrong_pw, unknown):
        assert r.status_code == 401
        assert COOKIE not in r.headers.get("set-cookie", "")
        assert 'id="password-error">Wrong email or password.' in r.text
    assert 'value="ana@bank.test"' in wrong_pw.text  # the email is kept, the password not
    assert "not the password" not in wrong_pw.text
    empty = sign_in(client, "", "")
    assert empty.status_code == 422
    assert 'id="email-error">Enter your email address.' in empty.text
    assert 'id="password-error">Enter your password.' in empty.text


def test_sign_in_needs_its_form_token_and_goes_nowhere_else(client: TestClient) -> None:
    form = {"csrf": "forged", "email": "ana@bank.test", "password": PASSWORD}
    _login_csrf(client)
    r = client.post("/agent/login", data=form, follow_redirects=False)
    assert r.status_code == 403 and "This form expired" in r.text
    fresh = TestClient(client.app)  # no login-form cookie at all
    form["csrf"] = "x" * 32
    assert fresh.post("/agent/login", data=form, follow_redirects=False).status_code == 403
    targets = ("https://evil.test/agent", "//evil.test/agent", "/v1/visitors", "/agent/logout")
    for target in (*targets, "/agent.evil", "/\\evil.test/agent"):
        r = sign_in(TestClient(client.app), "ana@bank.test", next=target)
        assert r.headers["location"] == "/agent", target


def test_expired_forged_and_disabled_sessions_sign_nobody_in(client: TestClient) -> None:
    engine: Engine = client.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        ana = next(u for u in users.list_users(conn) if u.email == "ana@bank.test")
        old, _ = users.start_session(conn, ana, now_ms=_now() - users.SESSION_MS - 1)
        live, _ = users.start_session(conn, ana, now_ms=_now())
    forged = secrets.token_urlsafe(32)
    for token in (old, forged, "x" * 500):
        c = TestClient(client.app, cookies={COOKIE: token})
        page = c.get("/agent", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"] == "/agent/login?next=%2Fagent"
        api = c.get("/agent/api/canned")
        assert api.status_code == 401 and api.json()["error"]["code"] == "not_signed_in"
    c = TestClient(client.app, cookies={COOKIE: live})
    assert c.get("/agent").status_code == 200
    with engine.begin() as conn:
        users.disable(conn, ana.id, now_ms=_now())
    assert c.get("/agent", follow_redirects=False).status_code == 303


def test_every_write_needs_the_session_csrf_token(client: TestClient) -> None:
    csrf = signed_in(client, "ana@bank.test")
    body = {"presence": "available"}
    missing = client.post("/agent/api/presence", json=body)
    wrong = client.post("/agent/api/presence", json=body, headers={"X-CSRF-Token": csrf + "x"})
    for r in (missing, wrong):
        assert r.status_code == 403 and r.json()["error"]["code"] == "bad_csrf"
    with client.engine.connect() as conn:  # type: ignore[attr-defined]
        assert "ana" not in agent_states(conn)  # nothing changed
    ok = client.post("/agent/api/presence", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json() == {"agentId": "ana", "presence": "available"}
    with client.engine.connect() as conn:  # type: ignore[attr-defined]
        assert agent_states(conn)["ana"].presence == "available"
    bad = client.post(
        "/agent/api/presence", json={"presence": "asleep"}, headers={"X-CSRF-Token": csrf}
    )
    assert bad.status_code == 422 and bad.json()["error"]["path"] == "presence"
    # The sign-out form: refused without or with a wrong token, then done with the right one.
    assert client.post("/agent/logout", data={}, follow_redirects=False).status_code == 403
    r = client.post("/agent/logout", data={"csrf": "nope"}, follow_redirects=False)
    assert r.status_code == 403
    assert client.get("/agent").status_code == 200  # still signed in
    r = client.post("/agent/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/agent/login"
    assert client.get("/agent", follow_redirects=False).status_code == 303


# Every /agent route, and what an anonymous browser gets from it.
ROUTES = [
    ("GET", "/agent", 303),
    ("POST", "/agent/logout", 303),
    ("GET", "/agent/api/conversations", 401),
    ("GET", "/agent/api/conversations/c-loans", 401),
    ("GET", "/agent/api/canned", 401),
    ("GET", "/agent/api/monitor", 401),
    ("POST", "/agent/api/presence", 401),
]


@pytest.mark.parametrize(("method", "path", "status"), ROUTES)
def test_anonymous_is_refused_everywhere(
    client: TestClient, method: str, path: str, status: int
) -> None:
    r = client.request(method, path, json={"presence": "available"}, follow_redirects=False)
    assert r.status_code == status
    if status == 303:
        assert r.headers["location"].startswith("/agent/login?next=")
    else:
        assert r.json()["error"]["code"] == "not_signed_in"


def _get(c: TestClient, path: str) -> Any:
    return c.get(path, follow_redirects=False)


def test_an_agent_sees_only_their_queues_and_chats(client: TestClient) -> None:
    ben = TestClient(client.app)
    csrf = signed_in(ben, "ben@bank.test")
    # Ben is in loans: he may read a loans chat, even one routed to Ana, never a support one.
    assert _get(ben, "/agent/api/conversations/c-waiting").status_code == 200
    assert (
        _get(ben, "/agent/api/conversations/c-loans").json()["conversation"]["canAnswer"] is False
    )
    denied = _get(ben, "/agent/api/conversations/c-support")
    assert denied.status_code == 403
    assert denied.json()["error"]["message"] == "not a member of this conversation's queue"
    assert _get(ben, "/agent/api/conversations/nope").status_code == 404
    assert _get(ben, "/agent/api/conversations").json() == {"items": []}
    assert {i["queue"] for i in _get(ben, "/agent/api/canned").json()["items"]} == {"loans"}
    r = _get(ben, "/agent/api/monitor")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    # Presence is one's own: there is no way to name another agent.
    r = ben.post(
        "/agent/api/presence",
        json={"presence": "away", "agent": "ana"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 422
    ana = TestClient(client.app)
    signed_in(ana, "ana@bank.test")
    mine = _get(ana, "/agent/api/conversations").json()["items"]
    assert sorted(c["id"] for c in mine) == ["c-loans", "c-support"]
    got = _get(ana, "/agent/api/conversations/c-support").json()
    assert got["conversation"]["canAnswer"] is True
    assert [m["text"] for m in got["messages"]] == ["<script>alert(1)</script>"]
    assert {i["queue"] for i in _get(ana, "/agent/api/canned").json()["items"]} == {
        "loans",
        "support",
    }


def test_a_supervisor_watches_their_queues_and_writes_nothing(client: TestClient) -> None:
    sue = TestClient(client.app)
    csrf = signed_in(sue, "sue@bank.test")
    got = _get(sue, "/agent/api/conversations/c-loans").json()["conversation"]
    assert got["canAnswer"] is False
    r = _get(sue, "/agent/api/conversations/c-support")
    assert r.status_code == 403
    watched = _get(sue, "/agent/api/monitor").json()["items"]
    assert sorted(c["id"] for c in watched) == ["c-loans", "c-waiting"]
    r = sue.post(
        "/agent/api/presence", json={"presence": "available"}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 403 and r.json()["error"]["message"] == "only an agent has a presence"
    page = _get(sue, "/agent").text
    assert 'id="monitor-list"' in page and "read-only" in page


def test_an_admin_sees_everything(client: TestClient) -> None:
    root = TestClient(client.app)
    signed_in(root, "root@bank.test")
    for cid in ("c-loans", "c-support", "c-waiting"):
        assert _get(root, f"/agent/api/conversations/{cid}").status_code == 200
    watched = _get(root, "/agent/api/monitor").json()["items"]
    assert sorted(c["id"] for c in watched) == ["c-loans", "c-support", "c-waiting"]
    assert {i["queue"] for i in _get(root, "/agent/api/canned").json()["items"]} == {
        "loans",
        "support",
    }


def test_names_reach_the_page_as_text(client: TestClient) -> None:
    engine: Engine = client.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        users.create_user(
            conn,
            email="mal@bank.test",
            name="<script>alert(1)</script>",
            role="supervisor",
            password=PASSWORD,
            now_ms=_now(),
            queues=["loans"],
        )
    c = TestClient(client.app)
    r = sign_in(c, "mal@bank.test")
    assert r.status_code == 303
    page = c.get("/agent").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the header, escaped
    assert "\\u003cscript>alert(1)\\u003c/script>" in page  # the config, inert in its script
