"""The context and CRM panels over HTTP, on the real app and a real database: who may see
what (a denial at each role boundary), the cursor, and CRM calls to a real HTTP server on
loopback that fails, then works, then is too slow — each shown to the agent as it was.

Signed in as the workspace's pages sign people in (api/people.py): the session cookie, and
the session's CSRF token on writes.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from fastapi.testclient import TestClient

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.core.conversations import draft
from opportune.settings import Settings
from opportune.store import conversations as conv_store
from opportune.store import interactions as inter_store
from opportune.store import users

ORIGIN = "http://127.0.0.1:8000"
HOSTILE = "<img src=x onerror=alert(1)>"
COOKIE = "opportune_session"


class Crm:
    """A CRM on loopback: answers each call with the next status of ``plan`` (then 200s);
    a status of 0 means: answer too late."""

    def __init__(self) -> None:
        self.plan: list[int] = []
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []
        self.leads: dict[str, dict[str, Any]] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.calls.append((self.command, self.path, headers, body))
                status = outer.plan.pop(0) if outer.plan else 200
                if status == 0:
                    time.sleep(1.0)
                    status = 200
                out: Any = {"error": "CRM is down for maintenance"}
                if status < 300:
                    out = outer._do(self.command, self.path, body)
                raw = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PATCH = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _do(self, method: str, path: str, body: Any) -> Any:
        if method == "GET":
            email = parse_qs(urlsplit(path).query)["email"][0]
            return {"items": [v for v in self.leads.values() if v.get("email") == email]}
        if method == "POST":
            lead = {**body, "id": f"L{len(self.leads) + 1}"}
            self.leads[lead["id"]] = lead
            return lead
        lead = self.leads[path.rsplit("/", 1)[-1]]
        lead.update(body)
        return lead

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def crm() -> Iterator[Crm]:
    c = Crm()
    yield c
    c.close()


def _workspace(root: Path, crm: Crm) -> Path:
    ws = root / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    doc = yaml.safe_load((ws / "crm.yaml").read_text())
    doc["timeout"] = "500ms"
    doc["headers"] = {"Authorization": "Bearer ${secret:CRM_TOKEN}"}
    doc["lookup"]["url"] = crm.base + "/leads?email={{ customer.email | urlencode }}"
    doc["create"]["url"] = crm.base + "/leads"
    doc["update"]["url"] = crm.base + "/leads/{{ lead.id | urlencode }}"
    (ws / "crm.yaml").write_text(yaml.safe_dump(doc))
    return ws


def _now() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def client(db_url: str, tmp_path: Path, crm: Crm) -> Iterator[TestClient]:
    settings = Settings(
        database_url=db_url,
        workspace=_workspace(tmp_path, crm),
        data_dir=tmp_path / "data",
        api_key="k",
        retrain_interval_h=0,
        webhook_secrets={"CRM_TOKEN": "s3cret"},
    )
    app = create_app(settings)  # the context router signed in by api/people.py
    with TestClient(app) as c:
        yield c


def _sign_in(client: TestClient, email: str, role: str, **kw: Any) -> dict[str, str]:
    engine = client.app.app.state.runtime.ingestor.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        user = users.create_user(
            conn,
            email=email,
            name=email.split("@")[0].title(),
            role=role,  # type: ignore[arg-type]
            password="a long password",
            now_ms=_now(),
            **kw,
        )
        token, session = users.start_session(conn, user, now_ms=_now())
    return {"cookie": f"{COOKIE}={token}", "x-csrf-token": session.csrf}


def _setup(client: TestClient) -> str:
    """A visit through /v1/events, then its chat with the bot, handed to Dev in support."""
    t = _now()
    events = [
        {"id": "p1", "ts": t - 3000, "type": "page_view", "url": f"{ORIGIN}/demo/index.html"},
        {"id": "s1", "ts": t - 2000, "type": "search", "query": HOSTILE},
        {
            "id": "i1",
            "ts": t - 1000,
            "type": "identify",
            "identity": {"email": "ana@example.com"},
            "traits": {"firstName": "Ana"},
        },
    ]
    body = {"siteKey": "demo-site-key", "visitorId": "v1", "sentAt": t, "events": events}
    r = client.post("/v1/events", json=body, headers={"origin": ORIGIN})
    assert r.status_code == 200, r.text
    engine = client.app.app.state.runtime.ingestor.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conv_store.open_conversation(
            conn,
            conversation_id="c1",
            site_id="demo",
            visitor_id="v1",
            customer_id=r.json().get("customerId"),
            state="bot",
            now_ms=t,
            queue="support",
        )
        conv_store.append(conn, "c1", draft("b1", "bot", "Hi!"), now_ms=t + 1)
        conv_store.transition(conn, "c1", "escalate", now_ms=t + 2)
        inter_store.insert(
            conn,
            inter_store.NewInteraction(
                id="c1", queue="support", medium="chat", arm="standard", features={}
            ),
            now_ms=t + 2,
        )
        inter_store.assign(
            conn,
            inter_store.Assignment("c1", "dev", "standard", 1.0, "longest idle", [], ["dev"]),
            now_ms=t + 3,
        )
        conv_store.transition(conn, "c1", "route", now_ms=t + 3, agent_id="dev")
    return "c1"


URL = "/agent/api/conversations/c1"


def test_each_role_sees_what_it_may_and_no_more(client: TestClient) -> None:
    _setup(client)
    dev = _sign_in(client, "dev@bank.example", "agent", agent_id="dev")
    # Ben's skills (loans only) make him a member of loans, not of support.
    ben = _sign_in(client, "ben@bank.example", "agent", agent_id="ben")
    carla = _sign_in(client, "carla@bank.example", "agent", agent_id="carla")
    sup = _sign_in(client, "sup@bank.example", "supervisor", queues=["support"])
    other = _sign_in(client, "sup2@bank.example", "supervisor", queues=["loans"])
    admin = _sign_in(client, "admin@bank.example", "admin")

    r = client.get(f"{URL}/context", headers=dev)
    assert r.status_code == 200, r.text
    ctx = r.json()
    search = next(i for i in ctx["timeline"] if i["kind"] == "search")
    assert search["query"] == HOSTILE  # data, rendered with textContent by the page
    assert ctx["who"]["name"] == "Ana" and ctx["routing"]["agentId"] == "dev"
    assert ctx["routing"]["text"] == "chosen by standard routing"

    for who in (carla, sup, admin):  # a member of the queue, its supervisor, an admin
        assert client.get(f"{URL}/context", headers=who).status_code == 200
    for who, reason in ((ben, "member"), (other, "member")):
        r = client.get(f"{URL}/context", headers=who)
        assert r.status_code == 403 and reason in r.json()["error"]["message"]
    assert client.get(f"{URL}/context").status_code == 401
    assert client.get(f"{URL}/context", headers={"cookie": f"{COOKIE}=forged"}).status_code == 401
    r = client.get("/agent/api/conversations/nope/context", headers=dev)
    assert r.status_code == 404
    r = client.get(f"{URL}/context", params={"since": "x"}, headers=dev)
    assert r.status_code == 422 and r.json()["error"]["path"] == "since"

    # Writing the lead is the chat's agent's: a supervisor or a colleague may only look.
    create = {"operation": "create", "fields": {"notes": "wants a card"}}
    for who in (sup, carla, admin):
        r = client.post(f"{URL}/crm", json=create, headers=who)
        assert r.status_code == 403, r.text
    r = client.post(f"{URL}/crm", json={"operation": "lookup"}, headers=sup)
    assert r.status_code == 200 and r.json()["ok"]


def test_since_brings_only_what_is_new(client: TestClient) -> None:
    _setup(client)
    dev = _sign_in(client, "dev@bank.example", "agent", agent_id="dev")
    first = client.get(f"{URL}/context", headers=dev).json()
    seen = {i["id"] for i in first["timeline"]}
    t = _now()
    body = {
        "siteKey": "demo-site-key",
        "visitorId": "v1",
        "sentAt": t,
        "events": [{"id": "s2", "ts": t, "type": "search", "query": "travel notice"}],
    }
    assert client.post("/v1/events", json=body, headers={"origin": ORIGIN}).status_code == 200
    again = client.get(f"{URL}/context", params={"since": first["cursor"]}, headers=dev).json()
    new = [i for i in again["timeline"] if i["id"] not in seen]
    assert [i["text"] for i in new if i["kind"] == "search"] == ["searched for 'travel notice'"]
    assert "who" not in again


def test_crm_failures_are_shown_then_the_lead_is_found_created_and_updated(
    client: TestClient, crm: Crm
) -> None:
    _setup(client)
    dev = _sign_in(client, "dev@bank.example", "agent", agent_id="dev")
    crm.plan = [500]
    r = client.post(f"{URL}/crm", json={"operation": "lookup"}, headers=dev)
    assert r.status_code == 200
    failed = r.json()
    assert not failed["ok"] and failed["status"] == 500
    assert failed["error"]["code"] == "http_500"
    assert "down for maintenance" in failed["error"]["message"]
    # The secret went in the header, resolved at call time; the email in the address.
    method, path, headers, _ = crm.calls[0]
    assert headers["authorization"] == "Bearer s3cret"
    assert (method, path) == ("GET", "/leads?email=ana%40example.com")

    r = client.post(f"{URL}/crm", json={"operation": "lookup"}, headers=dev).json()
    assert r["ok"] and r["found"] is False

    r = client.post(
        f"{URL}/crm", json={"operation": "create", "fields": {"notes": HOSTILE}}, headers=dev
    ).json()
    assert r["ok"] and r["leadId"] == "L1"
    assert crm.calls[-1][3]["email"] == "ana@example.com"
    assert crm.calls[-1][3]["notes"] == HOSTILE and crm.calls[-1][3]["owner"] == "Dev Patel"

    r = client.post(f"{URL}/crm", json={"operation": "lookup"}, headers=dev).json()
    assert r["found"] and r["lead"]["id"] == "L1"

    upd = {"operation": "update", "leadId": "L1", "fields": {"status": "qualified"}}
    r = client.post(f"{URL}/crm", json=upd, headers=dev).json()
    assert r["ok"] and r["lead"]["status"] == "qualified"
    assert crm.calls[-1][:2] == ("PATCH", "/leads/L1")

    crm.plan = [0]  # too slow: the agent is told, the call is not waited for longer
    r = client.post(f"{URL}/crm", json={"operation": "lookup"}, headers=dev).json()
    assert not r["ok"] and r["error"]["code"] == "timeout"

    r = client.post(f"{URL}/crm", json={"operation": "update"}, headers=dev)
    assert r.status_code == 422 and r.json()["error"]["path"] == "leadId"
    r = client.post(f"{URL}/crm", json={"operation": "delete"}, headers=dev)
    assert r.status_code == 422
