"""``POST /v1/import/events`` (admin API key): JSON lines of history through the running
server's pipeline — the original times and visits kept, bad lines named by number, a
request sent again storing nothing twice, an outcome recorded as live; on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.settings import Settings
from opportune.store.schema import outcome_achievements

T0 = 1_709_287_200_000  # 2024-03-01T10:00:00Z
MIN = 60_000
KEY = {"X-API-Key": "k"}
NDJSON = {**KEY, "Content-Type": "application/x-ndjson"}


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in ("sites.yaml", "pages.yaml", "segments.yaml", "outcomes.yaml"):
        shutil.copy(EXAMPLE_WORKSPACE / name, ws / name)
    settings = Settings(database_url=db_url, workspace=ws, data_dir=tmp_path, api_key="k")
    with TestClient(create_app(settings)) as c:
        yield c


def body(lines: list[dict[str, Any] | str]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def ev(vid: str, eid: str, type_: str, ts: int, **more: Any) -> dict[str, Any]:
    return {"visitorId": vid, "id": eid, "type": type_, "ts": ts, **more}


HISTORY = [
    ev("hv", "h1", "page_view", T0, url="https://bank.example/?utm_source=news"),
    ev("hv", "h2", "search", T0 + MIN, url="https://bank.example/s?q=loan", query="loan"),
    ev("hv", "h3", "page_view", T0 + 45 * MIN, url="https://bank.example/apply"),
    ev(
        "hv",
        "h4",
        "custom",
        T0 + 46 * MIN,
        url="https://bank.example/apply",
        name="loan_submitted",
        attributes={"amount": 7500},
        customerId="C-42",
    ),
]


def test_the_import_needs_the_admin_key(client: TestClient) -> None:
    assert client.post("/v1/import/events", content=body(HISTORY)).status_code == 401
    wrong = {"X-API-Key": "nope"}
    r = client.post("/v1/import/events", content=body(HISTORY), headers=wrong)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "bad_api_key"


def test_imported_visits_keep_their_times_sessions_and_outcome(client: TestClient) -> None:
    r = client.post("/v1/import/events", content=body(HISTORY), headers=NDJSON)
    assert r.status_code == 200, r.text
    s = r.json()
    assert (s["lines"], s["imported"], s["duplicates"], s["refused"]) == (4, 5, 0, 0)
    assert (s["identities"], s["visitors"], s["firstTs"], s["lastTs"]) == (1, 1, T0, T0 + 46 * MIN)
    sessions = client.get("/v1/visitors/hv/sessions", headers=KEY).json()["items"]
    # Two visits (45 minutes apart), newest first, with their own times.
    assert [(x["number"], x["startedAt"], x["lastEventAt"]) for x in sessions] == [
        (2, T0 + 45 * MIN, T0 + 46 * MIN),
        (1, T0, T0 + MIN),
    ]
    assert sessions[1]["utmSource"] == "news"
    first = client.get(f"/v1/sessions/{sessions[1]['id']}/events", headers=KEY).json()["items"]
    assert [(e["eventId"], e["ts"]) for e in first] == [("h1", T0), ("h2", T0 + MIN)]
    engine = client.app.app.state.runtime.ingestor.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        achieved = conn.execute(
            select(
                outcome_achievements.c.outcome,
                outcome_achievements.c.session_id,
                outcome_achievements.c.achieved_at,
                outcome_achievements.c.value,
            )
        ).all()
    assert [tuple(a) for a in achieved] == [
        ("loan_submitted", sessions[0]["id"], T0 + 46 * MIN, 7500.0)
    ]
    customer = client.get("/v1/visitors/hv", headers=KEY).json()["customerId"]
    assert customer is not None


def test_bad_lines_are_named_by_number_and_the_rest_stored(client: TestClient) -> None:
    lines: list[dict[str, Any] | str] = [
        ev("bv", "b1", "page_view", T0, url="https://bank.example/"),
        "[1, 2]",
        ev("bv", "b3", "search", T0 + 1000, url="https://bank.example/s"),
        ev("bv", "b4", "click", 4_000_000_000_000, url="https://bank.example/"),
        ev("bv", "b5", "idle", T0 + 2000, attributes={"seconds": 30}),
    ]
    r = client.post("/v1/import/events", content=body(lines), headers=NDJSON)
    assert r.status_code == 200, r.text
    s = r.json()
    assert (s["lines"], s["imported"], s["refused"]) == (5, 2, 3)
    assert s["problems"] == [
        {"line": 2, "id": None, "reason": "Expected `object`, got `array`"},
        {"line": 3, "id": "b3", "reason": "search needs query"},
        {
            "line": 4,
            "id": "b4",
            "reason": "in the future: timestamp ahead of the server clock",
        },
    ]


def test_a_request_sent_again_stores_nothing_twice(client: TestClient) -> None:
    first = client.post("/v1/import/events", content=body(HISTORY), headers=NDJSON).json()
    again = client.post("/v1/import/events", content=body(HISTORY), headers=NDJSON).json()
    assert (again["imported"], again["duplicates"], again["visitors"]) == (0, first["imported"], 0)
    sessions = client.get("/v1/visitors/hv/sessions", headers=KEY).json()["items"]
    assert sorted(x["eventCount"] for x in sessions) == [2, 3]


def test_live_traffic_after_the_import_continues_the_visitor(client: TestClient) -> None:
    client.post("/v1/import/events", content=body(HISTORY), headers=NDJSON)
    now = int(time.time() * 1000)
    live = {
        "siteKey": "demo-site-key",
        "visitorId": "hv",
        "sentAt": now,
        "events": [{"id": "l1", "type": "page_view", "ts": now, "url": "https://bank.example/"}],
    }
    r = client.post("/v1/events", content=json.dumps(live))
    assert r.status_code == 200, r.text
    assert r.json()["visitNumber"] == 3
    # History cannot come in through /v1/events: it is too old for live traffic.
    live["events"] = [{"id": "l0", "type": "page_view", "ts": T0, "url": "https://bank.example/"}]
    live["sentAt"] = now
    refused = client.post("/v1/events", content=json.dumps(live)).json()["refused"]
    assert refused[0]["reason"].startswith("too old")


def test_unknown_site_and_empty_body_are_refused(client: TestClient) -> None:
    r = client.post("/v1/import/events?site=nope", content=body(HISTORY), headers=NDJSON)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "no site 'nope'; the sites are: demo"
    r = client.post("/v1/import/events", content=b"\n\n", headers=NDJSON)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "empty"


def test_the_endpoint_is_in_the_openapi_document(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/import/events"]["post"]
    assert "application/x-ndjson" in op["requestBody"]["content"]
    assert any(p["name"] == "site" for p in op["parameters"])
