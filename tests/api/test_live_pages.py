"""Live Now over HTTP on SQLite and PostgreSQL: who may open it, the stream's snapshot and
deltas after real events through ``/v1/events`` (in memory, and shared by two app
processes through real Redis), and the journey map (visitor text escaped)."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.settings import Settings
from opportune.store import users

ORIGIN = "http://127.0.0.1:8000"
HOSTILE = "<img src=x onerror=alert(1)>"


def send(c: TestClient, vid: str, url: str, title: str | None = None) -> dict[str, Any]:
    t = int(time.time() * 1000)
    ev: dict[str, Any] = {"id": f"e-{t}-{vid}", "ts": t, "type": "page_view", "url": url}
    if title:
        ev["title"] = title
    body = {"siteKey": "demo-site-key", "visitorId": vid, "sentAt": t, "events": [ev]}
    r = c.post("/v1/events", json=body, headers={"origin": ORIGIN})
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture
def client(staffed: TestClient) -> TestClient:
    return staffed


def test_anonymous_is_sent_to_sign_in_and_back(
    client: TestClient, sign_in: Callable[..., str]
) -> None:
    for path in ("/live", "/live/stream", "/live/visitors/v1"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/agent/login?next=%2Flive")
    assert sign_in(client, "sue@bank.test", "/live") == "/live"


def test_an_agent_is_refused_a_supervisor_and_an_admin_are_not(
    client: TestClient, sign_in: Callable[..., str]
) -> None:
    sign_in(client, "ana@bank.test")
    for path in ("/live", "/live/stream", "/live/visitors/v1"):
        assert client.get(path, follow_redirects=False).status_code == 403, path
    for email in ("sue@bank.test", "root@bank.test"):
        sign_in(client, email)
        r = client.get("/live")
        assert r.status_code == 200 and "Live Now" in r.text
        assert '"paid-campaign": {"colour": "#f58518"' in r.text  # the chips' colours
        assert "Content-Security-Policy" in r.headers


def sse_events(lines: Iterator[str], wanted: int) -> list[tuple[str, Any]]:
    """The first ``wanted`` named events of a stream (comments skipped)."""
    out: list[tuple[str, Any]] = []
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            out.append((name, json.loads(line[6:])))
            name = None
            if len(out) == wanted:
                break
    return out


def test_the_stream_opens_with_a_snapshot_then_sends_deltas(
    client: TestClient, sign_in: Callable[..., str]
) -> None:
    answer = send(client, "v1", f"{ORIGIN}/demo/?utm_campaign=spring&utm_medium=cpc", HOSTILE)
    send(client, "v2", f"{ORIGIN}/demo/help")
    sign_in(client, "sue@bank.test")
    with client.stream("GET", "/live/stream") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        [(kind, snap)] = sse_events(lines, 1)
        assert kind == "snapshot"
        rows = {v["visitorId"]: v for v in snap["visitors"]}
        assert set(rows) == {"v1", "v2"}
        v1 = rows["v1"]
        assert v1["title"] == HOSTILE and v1["url"].endswith("utm_medium=cpc")
        assert v1["utmCampaign"] == "spring" and v1["identified"] is False
        assert "paid-campaign" in answer["segments"]  # as /v1/events answered
        assert v1["segments"] == answer["segments"] and v1["visitNumber"] == 1
        assert rows["v2"]["segments"] == []
        assert v1["sessionId"] == answer["sessionId"]
        send(client, "v3", f"{ORIGIN}/demo/apply")
        [(kind, delta)] = sse_events(lines, 1)
        assert kind == "delta" and delta["gone"] == []
        assert [v["visitorId"] for v in delta["changed"]] == ["v3"]
        assert delta["version"] > snap["version"]


def test_the_journey_map_shows_the_visit_with_visitor_text_escaped(
    client: TestClient, sign_in: Callable[..., str]
) -> None:
    send(client, "v1", f"{ORIGIN}/demo/", HOSTILE)
    send(client, "v1", f"{ORIGIN}/demo/search?q=personal+loan")
    sign_in(client, "sue@bank.test")
    r = client.get("/live/visitors/v1")
    assert r.status_code == 200
    assert HOSTILE not in r.text and "&lt;img src=x onerror=alert(1)&gt;" in r.text
    assert "/demo/search?q=personal+loan" in r.text and "Earlier visits" in r.text
    assert client.get("/live/visitors/nobody").status_code == 404


def test_with_redis_one_process_streams_the_visitors_another_took_in(
    db_url: str, tmp_path: Path, sign_in: Callable[..., str]
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    shared = {
        "database_url": db_url, "workspace": ws, "data_dir": tmp_path, "api_key": "k",
        "redis_url": "redis://127.0.0.1:6379/15", "redis_prefix": f"t-{uuid.uuid4().hex[:8]}:",
    }  # fmt: skip
    first, second = create_app(Settings(**shared)), create_app(Settings(**shared))
    with TestClient(first) as a, TestClient(second) as b:
        with a.app.app.state.runtime.ingestor.engine.begin() as conn:
            users.create_user(
                conn,
                email="sue@bank.test",
                name="Sue",
                role="supervisor",
                password="correct horse battery",  # sign_in's (tests/api/conftest.py)
                now_ms=int(time.time() * 1000),
            )
        answer = send(a, "v-from-a", f"{ORIGIN}/demo/?utm_medium=cpc")
        sign_in(b, "sue@bank.test")
        assert "shared through Redis" in b.get("/live").text
        with b.stream("GET", "/live/stream") as r:
            lines = r.iter_lines()
            seen: dict[str, Any] = {}
            for _ in range(5):  # the snapshot, or a delta once A's flusher wrote it
                [(kind, data)] = sse_events(lines, 1)
                rows = data["visitors"] if kind == "snapshot" else data["changed"]
                seen.update({v["visitorId"]: v for v in rows})
                if "v-from-a" in seen:
                    break
        assert seen["v-from-a"]["segments"] == answer["segments"]
        assert seen["v-from-a"]["sessionId"] == answer["sessionId"]
