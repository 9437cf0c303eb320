"""Engagement over HTTP on real databases: offers in the /v1/events answers, reports, pacing
by queue presence, caps, rechecks, explanations, webhooks against a real HTTP server
(including its failure), and uplift against the holdout."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.core.actionmaps import in_holdout
from opportune.settings import Settings
from opportune.store.schema import action_events, outcome_achievements

KEY = {"X-API-Key": "k"}
ORIGIN = "http://127.0.0.1:8000"
APPLY = f"{ORIGIN}/demo/apply.html"


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    settings = Settings(
        database_url=db_url,
        workspace=ws,
        data_dir=tmp_path,
        api_key="k",
        webhook_secrets={"CRM_TOKEN": "s3cret"},
    )
    with TestClient(create_app(settings)) as c:
        c.db_url = db_url  # type: ignore[attr-defined]
        yield c


def engaged_visitor(prefix: str, *maps: str) -> str:
    """A visitor id outside the holdout of every named map (the example holds out 10%)."""
    return next(
        f"{prefix}{i}"
        for i in range(1000)
        if not any(in_holdout(f"{prefix}{i}", m, 0.1) for m in maps)
    )


class Visitor:
    def __init__(self, client: TestClient, vid: str) -> None:
        self.client, self.vid, self.n = client, vid, 0

    def send(self, *events: dict[str, Any]) -> dict[str, Any]:
        t = int(time.time() * 1000)
        evs = []
        for e in events:
            self.n += 1
            evs.append({"id": f"{self.vid}-{self.n}", "ts": t, **e})
        body = {"siteKey": "demo-site-key", "visitorId": self.vid, "sentAt": t, "events": evs}
        r = self.client.post("/v1/events", json=body, headers={"origin": ORIGIN})
        assert r.status_code == 200, r.text
        return r.json()

    def report(self, *reports: dict[str, Any]) -> Any:
        t = int(time.time() * 1000)
        body = {
            "siteKey": "demo-site-key",
            "visitorId": self.vid,
            "sentAt": t,
            "reports": [{"ts": t, **r} for r in reports],
        }
        return self.client.post("/v1/actions", json=body, headers={"origin": ORIGIN})


def states(client: TestClient, map_name: str) -> list[tuple[str, str | None]]:
    eng = create_engine(client.db_url.replace("postgresql://", "postgresql+psycopg://"))  # type: ignore[attr-defined]
    try:
        with eng.connect() as c:
            return [
                (r.state, r.reason)
                for r in c.execute(
                    select(action_events.c.state, action_events.c.reason)
                    .where(action_events.c.map == map_name)
                    .order_by(action_events.c.id)
                )
            ]
    finally:
        eng.dispose()


def test_a_device_activation_search_gets_the_content_offer_once(client: TestClient) -> None:
    v = Visitor(client, engaged_visitor("da", "device-activation-help"))
    r = v.send({"type": "page_view", "url": f"{ORIGIN}/demo/search.html"})
    assert "actions" not in r
    r = v.send({"type": "search", "query": "Device activation", "url": f"{ORIGIN}/demo/"})
    [offer] = r["actions"]
    assert offer["map"] == "device-activation-help" and offer["type"] == "content"
    assert offer["content"]["title"] == "Activate your device in three steps"
    assert offer["content"]["layout"] == "slide-in" and offer["content"]["style"]["primary"]
    assert v.report({"id": offer["id"], "state": "offered"}).json() == {
        "accepted": 1,
        "refused": [],
    }
    assert v.report({"id": offer["id"], "state": "accepted"}).status_code == 200
    r = v.send({"type": "search", "query": "device activation again", "url": f"{ORIGIN}/"})
    assert "actions" not in r  # a map qualifies once per visit
    assert [s for s, _ in states(client, "device-activation-help")] == [
        "qualified",
        "offered",
        "offered",
        "accepted",
    ]


def test_reports_are_validated_one_by_one_and_as_a_whole(client: TestClient) -> None:
    v = Visitor(client, engaged_visitor("rp", "device-activation-help"))
    offer = v.send({"type": "search", "query": "device activation", "url": ORIGIN})["actions"][0]
    r = v.report({"id": offer["id"], "state": "rejected"}, {"id": "ai_00ff", "state": "accepted"})
    assert r.json() == {
        "accepted": 1,
        "refused": [
            {
                "index": 1,
                "id": "ai_00ff",
                "reason": "unknown action instance for this visitor's current visit",
            }
        ],
    }
    r = v.report({"id": offer["id"], "state": "liked"})
    assert r.status_code == 400 and r.json()["error"]["path"] == "$.reports[0].state"
    r = client.post(
        "/v1/actions",
        json={
            "siteKey": "demo-site-key",
            "visitorId": "nobody",
            "sentAt": int(time.time() * 1000),
            "reports": [{"id": offer["id"], "state": "accepted", "ts": int(time.time() * 1000)}],
        },
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_visitor"


def test_chat_is_blocked_without_agents_and_offered_once_they_are_present(
    client: TestClient,
) -> None:
    v = Visitor(client, engaged_visitor("ch", "loan-struggle-chat"))
    v.send(
        {"type": "page_view", "url": APPLY},
        {
            "type": "identify",
            "identity": {"email": "Maria@Example.com"},
            "traits": {"firstName": "María"},
        },
    )
    r = v.send(
        {"type": "form_error", "name": "loan", "url": APPLY},
        {"type": "form_error", "name": "loan", "url": APPLY},
    )
    assert "loan-form-strugglers" in r["segments"] and "actions" not in r
    why = client.get(f"/v1/visitors/{v.vid}/explain", headers=KEY).json()
    chat = next(m for m in why["maps"] if m["name"] == "loan-struggle-chat")
    assert chat["now"] == "blocked: no agents: no agents available"
    assert chat["history"][-1]["reason"] == "no agents: no agents available"
    other = next(m for m in why["maps"] if m["name"] == "travel-notice")
    assert other["now"].startswith("not qualified: in segment travel-alert-searchers")
    assert (
        client.put(
            "/v1/queues/loans/presence", json={"agentsAvailable": 3}, headers=KEY
        ).status_code
        == 200
    )
    queues = {q["name"]: q for q in client.get("/v1/queues", headers=KEY).json()["items"]}
    assert queues["loans"]["offering"] is True and queues["loans"]["agentsAvailable"] == 3
    [offer] = v.send({"type": "click", "name": "Continue", "url": APPLY})["actions"]
    assert offer["type"] == "chat" and offer["chat"]["queue"] == "loans"
    fields = {f["name"]: f.get("value") for f in offer["chat"]["form"]["fields"]}
    assert fields == {"firstName": "María", "email": "maria@example.com", "topic": None}
    r = v.report(
        {"id": offer["id"], "state": "accepted"},
        {"id": offer["id"], "state": "started", "form": {"firstName": "María"}},
    )
    assert r.json()["accepted"] == 2
    assert [s for s, _ in states(client, "loan-struggle-chat")] == [
        "qualified",
        "blocked",
        "offered",
        "accepted",
        "started",
    ]


def test_unknown_queue_presence_and_bad_presence_are_refused(client: TestClient) -> None:
    assert (
        client.put("/v1/queues/nope/presence", json={"agentsAvailable": 1}, headers=KEY).status_code
        == 404
    )
    r = client.put("/v1/queues/loans/presence", json={"agentsAvailable": -1}, headers=KEY)
    assert r.status_code == 422 and r.json()["error"]["path"] == "body.agentsAvailable"


def test_an_action_map_over_the_api_with_a_delay_and_a_schedule(client: TestClient) -> None:
    delayed = {
        "name": "delayed-tip",
        "trigger": {"searched": "mortgage"},
        "activation": {"type": "delay", "delay": "1s"},
        "action": {"type": "content", "content": {"title": "Mortgage tip"}},
    }
    r = client.post("/v1/action-maps", json=delayed, headers=KEY)
    assert r.status_code == 201, r.text
    closed = {
        **delayed,
        "name": "closed-tip",
        "schedule": {"closed": True},
        "activation": {"type": "immediately"},
    }
    assert client.post("/v1/action-maps", json=closed, headers=KEY).status_code == 201
    v = Visitor(client, "dl1")
    r = v.send({"type": "search", "query": "mortgage", "url": ORIGIN})
    assert "actions" not in r and r["recheckInMs"] >= 1000
    why = {
        m["name"]: m["now"]
        for m in client.get("/v1/visitors/dl1/explain", headers=KEY).json()["maps"]
    }
    assert why["closed-tip"] == "blocked: schedule: closed"
    deadline = time.time() + 10
    while True:
        t = int(time.time() * 1000)
        r = client.post(
            "/v1/recheck",
            json={"siteKey": "demo-site-key", "visitorId": "dl1", "sentAt": t},
            headers={"origin": ORIGIN},
        )
        assert r.status_code == 200, r.text
        if r.json().get("actions"):
            break
        assert time.time() < deadline, r.json()
        time.sleep(0.3)
    assert r.json()["actions"][0]["map"] == "delayed-tip"


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (
            {
                "name": "x",
                "trigger": {"searched": "a"},
                "action": {"type": "chat", "chat": {"queue": "nope", "invitation": {"title": "t"}}},
            },
            "condition",
            "unknown queue 'nope'",
        ),
        (
            {
                "name": "x",
                "trigger": {"segment": "ghost"},
                "action": {"type": "content", "content": {"title": "t"}},
            },
            "condition",
            "unknown segment 'ghost'",
        ),
        (
            {
                "name": "x",
                "trigger": {"searched": "a"},
                "action": {"type": "content", "webhook": {"url": "https://x"}},
            },
            "action",
            "needs exactly its 'content'",
        ),
        (
            {
                "name": "x",
                "trigger": {"searched": "a"},
                "schedule": {"hours": "9-5"},
                "action": {"type": "content", "content": {"title": "t"}},
            },
            "schedule.hours",
            "hours look like",
        ),
        (
            {
                "name": "x",
                "trigger": {"event": {"type": "clik"}},
                "action": {"type": "content", "content": {"title": "t"}},
            },
            "trigger.event.type",
            "unknown event type",
        ),
    ],
)
def test_bad_action_maps_are_refused_precisely(
    client: TestClient, body: dict[str, Any], path: str, message: str
) -> None:
    r = client.post("/v1/action-maps", json=body, headers=KEY)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["path"] == path and message in err["message"], err


class Receiver:
    """A real HTTP server on loopback that answers with the given statuses in turn."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = outer.statuses[min(len(outer.calls), len(outer.statuses)) - 1]
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/leads"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_map(name: str, url: str, retries: int) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"searched": "leads please"},
        "action": {
            "type": "webhook",
            "webhook": {
                "url": url,
                "headers": {"Authorization": "Bearer ${secret:CRM_TOKEN}"},
                "body": {
                    "visitor": "{{ visitor.id }}",
                    "segments": "{{ segments }}",
                    "note": "map {{ map }}",
                },
                "retries": retries,
                "timeout": "2s",
            },
        },
    }


def wait_for(test: Any, what: str, seconds: float = 20) -> None:
    deadline = time.time() + seconds
    while not test():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_webhook_creates_a_lead_after_a_retry(client: TestClient) -> None:
    crm = Receiver([503, 200])
    try:
        assert (
            client.post(
                "/v1/action-maps", json=webhook_map("crm-lead", crm.url, 3), headers=KEY
            ).status_code
            == 201
        )
        v = Visitor(client, "wh1")
        r = v.send({"type": "search", "query": "leads please", "url": ORIGIN})
        assert "actions" not in r  # webhooks never reach the page
        wait_for(lambda: len(crm.calls) == 2, "the retried call")
        headers, body = crm.calls[1]
        assert headers["authorization"] == "Bearer s3cret"
        assert headers["opportune-delivery"].startswith("ai_")
        assert body == {"visitor": "wh1", "segments": [], "note": "map crm-lead"}
        wait_for(lambda: ("completed", None) in states(client, "crm-lead"), "completed")
        assert [s for s, _ in states(client, "crm-lead")] == ["qualified", "offered", "completed"]
    finally:
        crm.close()


def test_a_webhook_that_keeps_failing_becomes_a_dead_letter(client: TestClient) -> None:
    crm = Receiver([500])
    try:
        assert (
            client.post(
                "/v1/action-maps", json=webhook_map("crm-down", crm.url, 1), headers=KEY
            ).status_code
            == 201
        )
        Visitor(client, "wh2").send({"type": "search", "query": "leads please", "url": ORIGIN})
        wait_for(lambda: any(s == "errored" for s, _ in states(client, "crm-down")), "dead")
        assert len(crm.calls) == 2  # the first try and one retry
        [dead] = client.get("/v1/webhooks/dead-letters", headers=KEY).json()["items"]
        assert dead["map"] == "crm-down" and dead["attempts"] == 2
        assert dead["lastError"].startswith("HTTP 500")
        reason = next(r for s, r in states(client, "crm-down") if s == "errored")
        assert reason is not None and reason.startswith("http_500")
        crm.statuses = [200]
        assert client.post(f"/v1/webhooks/{dead['id']}/retry", headers=KEY).status_code == 200
        wait_for(lambda: ("completed", None) in states(client, "crm-down"), "retried")
        assert client.post(f"/v1/webhooks/{dead['id']}/retry", headers=KEY).status_code == 409
    finally:
        crm.close()


def test_uplift_compares_engaged_and_held_out_visits(client: TestClient) -> None:
    eng = create_engine(client.db_url.replace("postgresql://", "postgresql+psycopg://"))  # type: ignore[attr-defined]
    now = int(time.time() * 1000)
    rows, won = [], []
    # 70 engaged visits of which 56 achieve the outcome afterwards, 80 held out with 48.
    for i in range(150):
        engaged = i < 70
        sid = f"s{i}"
        rows.append(
            {
                "site_id": "demo",
                "map": "travel-notice",
                "instance_id": f"ai_{i:04x}",
                "state": "offered" if engaged else "holdout",
                "reason": None,
                "at": now - 1000,
                "session_id": sid,
                "visitor_id": f"v{i}",
                "customer_id": None,
                "detail": None,
            }
        )
        if (engaged and i < 56) or (not engaged and i < 70 + 48):
            won.append(
                {
                    "session_id": sid,
                    "outcome": "purchase_confirmed",
                    "site_id": "demo",
                    "visitor_id": f"v{i}",
                    "customer_id": None,
                    "achieved_at": now,
                    "value": None,
                    "event_id": f"e{i}",
                }
            )
    # An outcome achieved before the decision does not count for the map.
    won[0]["achieved_at"] = now - 5000
    try:
        with eng.begin() as c:
            c.execute(action_events.insert(), rows)
            c.execute(outcome_achievements.insert(), won)
    finally:
        eng.dispose()
    r = client.get(
        "/v1/action-maps/travel-notice/uplift?outcome=purchase_confirmed&days=1", headers=KEY
    ).json()
    assert r["engaged"] == {"visits": 70, "achieved": 55}
    assert r["holdout"] == {"visits": 80, "achieved": 48}
    assert r["uplift"] == pytest.approx(55 / 70 - 48 / 80)
    assert r["ciLow"] < r["uplift"] < r["ciHigh"] and 0 < r["pValue"] < 0.05
    assert client.get("/v1/action-maps/nope/uplift?outcome=x", headers=KEY).status_code == 404
