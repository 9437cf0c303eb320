"""Segments and outcomes over the admin API, audience estimates, and the live journey view."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.settings import Settings

KEY = {"X-API-Key": "k"}
ORIGIN = "http://127.0.0.1:8000"


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    settings = Settings(database_url=db_url, workspace=ws, data_dir=tmp_path, api_key="k")
    with TestClient(create_app(settings)) as c:
        yield c


def send(client: TestClient, visitor: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    t = int(time.time() * 1000)
    body = {
        "siteKey": "demo-site-key",
        "visitorId": visitor,
        "sentAt": t,
        "events": [
            {"id": f"{visitor}-{i}-{t}", "ts": t - 1000 + i, **e} for i, e in enumerate(events)
        ],
    }
    r = client.post("/v1/events", json=body, headers={"origin": ORIGIN})
    assert r.status_code == 200, r.text
    return r.json()


MORTGAGE = {"name": "mortgage-searchers", "condition": {"searched": "mortgage"}}


def test_workspace_definitions_are_listed_and_read_only(client: TestClient) -> None:
    r = client.get("/v1/segments", headers=KEY)
    assert r.status_code == 200
    names = {s["name"]: s["source"] for s in r.json()["items"]}
    assert names["mobile-visitors"] == "workspace" and len(names) >= 6
    outcomes = {o["name"] for o in client.get("/v1/outcomes", headers=KEY).json()["items"]}
    assert {"loan_submitted", "purchase_confirmed", "quote_requested", "demo_booked"} <= outcomes
    r = client.put(
        "/v1/segments/mobile-visitors", json={"condition": {"returning": True}}, headers=KEY
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "defined_in_workspace"
    assert client.delete("/v1/segments/mobile-visitors", headers=KEY).status_code == 409
    assert client.get("/v1/segments", headers={}).status_code == 401


def test_create_read_update_delete(client: TestClient) -> None:
    r = client.post("/v1/segments", json=MORTGAGE, headers=KEY)
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "api" and r.json()["scope"] == "session"
    assert client.post("/v1/segments", json=MORTGAGE, headers=KEY).status_code == 409
    got = client.get("/v1/segments/mortgage-searchers", headers=KEY).json()
    assert got["condition"] == {"searched": "mortgage"}
    r = client.put(
        "/v1/segments/mortgage-searchers",
        json={"condition": {"searched": ["mortgage", "home loan"]}, "colour": "#112233"},
        headers=KEY,
    )
    assert r.status_code == 200 and r.json()["colour"] == "#112233"
    assert client.delete("/v1/segments/mortgage-searchers", headers=KEY).status_code == 200
    assert client.get("/v1/segments/mortgage-searchers", headers=KEY).status_code == 404
    assert client.delete("/v1/segments/mortgage-searchers", headers=KEY).status_code == 404


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (
            {"name": "x", "condition": {"attribute": "currentUrl", "regex": "(unclosed"}},
            "condition.regex",
            "not a valid regular expression",
        ),
        ({"name": "x", "condition": {"returning": True}, "colur": "#fff"}, "colur", "unknown"),
        ({"name": "X Y", "condition": {"returning": True}}, "name", "pattern"),
        ({"name": "x", "condition": {"segment": "nope"}}, "condition", "unknown segment 'nope'"),
        (
            {"name": "x", "condition": {"all": [{"event": {"type": "clik"}}]}},
            "condition.all[0].event.type",
            "unknown event type 'clik'",
        ),
        ({"name": "x"}, "condition", "required"),
        ([1, 2], "", "JSON object"),
    ],
)
def test_bad_definitions_are_refused_precisely_and_nothing_is_lost(
    client: TestClient, body: Any, path: str, message: str
) -> None:
    assert client.post("/v1/segments", json=MORTGAGE, headers=KEY).status_code == 201
    r = client.post("/v1/segments", json=body, headers=KEY)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["path"] == path and message in err["message"], err
    r = client.post("/v1/segments/validate", json=body, headers=KEY)
    assert r.status_code == 422
    assert client.get("/v1/segments/mortgage-searchers", headers=KEY).status_code == 200
    assert client.get("/v1/segments/x", headers=KEY).status_code == 404


def test_cycles_and_dangling_references_are_refused(client: TestClient) -> None:
    a = {"name": "a", "condition": {"any": [{"returning": True}, {"segment": "mobile-visitors"}]}}
    assert client.post("/v1/segments", json=a, headers=KEY).status_code == 201
    b = {"name": "b", "condition": {"segment": "a"}}
    assert client.post("/v1/segments", json=b, headers=KEY).status_code == 201
    r = client.put("/v1/segments/a", json={"condition": {"segment": "b"}}, headers=KEY)
    assert r.status_code == 422
    assert "cycle: a -> b -> a" in r.json()["error"]["message"]
    # Deleting what another segment reads would leave it dangling.
    r = client.delete("/v1/segments/a", headers=KEY)
    assert r.status_code == 422 and "unknown segment 'a'" in r.json()["error"]["message"]
    assert client.get("/v1/segments/a", headers=KEY).json()["condition"] == a["condition"]


def test_validate_does_not_store(client: TestClient) -> None:
    r = client.post("/v1/segments/validate", json=MORTGAGE, headers=KEY)
    assert r.status_code == 200 and r.json()["valid"] is True
    assert client.get("/v1/segments/mortgage-searchers", headers=KEY).status_code == 404


def test_events_answer_with_segments_and_the_live_view_shows_them(client: TestClient) -> None:
    page = f"{ORIGIN}/demo/index.html?utm_medium=cpc"
    r = send(client, "lv1", [{"type": "page_view", "url": page}])
    assert r["segments"] == ["paid-campaign"] and r["outcomes"] == []
    r = send(
        client,
        "lv1",
        [
            {"type": "search", "query": "travel alert", "url": page},
            {"type": "custom", "name": "quote_requested", "attributes": {"amount": 9000}},
        ],
    )
    assert set(r["segments"]) == {"paid-campaign", "travel-alert-searchers"}
    assert r["outcomes"] == ["quote_requested"]
    view = client.get("/v1/visitors/lv1/live", headers=KEY).json()
    assert view["currentPage"] == page and view["active"] is True
    assert view["events"] == 3 and view["pageViews"] == 1
    assert {s["name"] for s in view["segments"]} == {"paid-campaign", "travel-alert-searchers"}
    seg = next(s for s in view["segments"] if s["name"] == "travel-alert-searchers")
    assert seg["since"] > 0 and seg["colour"].startswith("#") and seg["scope"] == "session"
    assert [(o["name"], o["value"]) for o in view["outcomes"]] == [("quote_requested", 9000.0)]
    assert client.get("/v1/visitors/nobody/live", headers=KEY).status_code == 404


def test_a_segment_created_over_the_api_applies_to_visitors_on_the_site(
    client: TestClient,
) -> None:
    send(client, "lv2", [{"type": "search", "query": "Mortgage rates", "url": f"{ORIGIN}/"}])
    assert client.post("/v1/segments", json=MORTGAGE, headers=KEY).status_code == 201
    view = client.get("/v1/visitors/lv2/live", headers=KEY).json()
    assert view["segments"] == []  # evaluated at the visitor's next event
    r = send(client, "lv2", [{"type": "page_view", "url": f"{ORIGIN}/demo/help.html"}])
    assert "mortgage-searchers" in r["segments"]


def test_audience_estimate_replays_stored_visits(client: TestClient) -> None:
    for i in range(6):
        q = "mortgage" if i % 3 == 0 else "card"
        send(client, f"ae{i}", [{"type": "search", "query": q, "url": f"{ORIGIN}/"}])
    r = client.post("/v1/segments/estimate?days=1", json=MORTGAGE, headers=KEY)
    assert r.status_code == 200, r.text
    assert r.json() | {"share": None} == {
        "kind": "segment",
        "name": "mortgage-searchers",
        "days": 1,
        "sessions": 6,
        "matched": 2,
        "share": None,
        "truncated": False,
    }
    r = client.get("/v1/outcomes/quote_requested/estimate?days=1", headers=KEY)
    assert r.status_code == 200 and r.json()["matched"] == 0
    assert client.get("/v1/outcomes/nope/estimate", headers=KEY).status_code == 404
    assert client.get("/v1/outcomes/quote_requested/estimate?days=0", headers=KEY).status_code == (
        422
    )
