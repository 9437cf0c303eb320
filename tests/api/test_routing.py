"""Routing over the admin API on real databases: agents, interactions, wrap-up codes,
re-dispatch when capacity frees, attributions, readiness and the comparison test."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.core.valuation import compare, summarise
from opportune.settings import Settings
from opportune.store.schema import interactions, outcome_attributions
from opportune.workspace.engagement import kpi_outcome_id

KEY = {"X-API-Key": "k"}


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    settings = Settings(database_url=db_url, workspace=ws, data_dir=tmp_path, api_key="k")
    with TestClient(create_app(settings)) as c:
        c.db_url = db_url  # type: ignore[attr-defined]
        yield c


def arrive(client: TestClient, iid: str, queue: str = "loans", **kw: Any) -> dict[str, Any]:
    r = client.post("/v1/interactions", json={"id": iid, "queue": queue, **kw}, headers=KEY)
    assert r.status_code == 201, r.text
    return r.json()


def presence(client: TestClient, agent: str, state: str) -> dict[str, Any]:
    r = client.put(f"/v1/agents/{agent}/presence", json={"presence": state}, headers=KEY)
    assert r.status_code == 200, r.text
    return r.json()


def test_interactions_wait_for_an_eligible_agent_and_capacity(client: TestClient) -> None:
    first = arrive(client, "i1", language="es")
    assert first["interaction"]["status"] == "waiting" and first["assigned"] == []
    # Dev has no loans skill: still waiting. Ana (loans 5, Spanish) takes it.
    assert presence(client, "dev", "available")["assigned"] == []
    made = presence(client, "ana", "available")["assigned"]
    assert [(a["interactionId"], a["agentId"]) for a in made] == [("i1", "ana")]
    assert made[0]["propensity"] == 1.0
    # The queue routes predictively with a 20% control share; without a model yet, the
    # predictive arm falls back to standard routing and says so.
    if made[0]["arm"] == "predictive":
        assert made[0]["why"].startswith(
            "no loan-conversion model for queue loans yet: standard routing"
        )
    else:
        assert made[0]["arm"] == "control"
    arrive(client, "i2")
    assert arrive(client, "i3")["assigned"] == []  # Ana holds two chats: her capacity
    got = client.get("/v1/interactions/i3", headers=KEY).json()
    assert got["status"] == "waiting"
    agents = {a["id"]: a for a in client.get("/v1/agents", headers=KEY).json()["items"]}
    assert agents["ana"]["load"] == {"chat": 2} and agents["ben"]["presence"] == "offline"
    # A wrap-up code is required, and must be one of the queue's.
    r = client.post("/v1/interactions/i1/end", json={}, headers=KEY)
    assert r.status_code == 422 and r.json()["error"]["code"] == "wrap_up_required"
    r = client.post("/v1/interactions/i1/end", json={"wrapUpCode": "sold-it"}, headers=KEY)
    assert r.status_code == 422 and r.json()["error"]["path"] == "wrapUpCode"
    r = client.post("/v1/interactions/i1/end", json={"wrapUpCode": "loan-sold"}, headers=KEY)
    assert r.status_code == 200
    # The freed slot goes at once to the one waiting.
    assert [(a["interactionId"], a["agentId"]) for a in r.json()["assigned"]] == [("i3", "ana")]
    again = client.post("/v1/interactions/i1/end", json={"wrapUpCode": "loan-sold"}, headers=KEY)
    assert again.status_code == 409


def test_bad_interactions_are_refused_precisely_and_nothing_is_lost(client: TestClient) -> None:
    arrive(client, "ok1")
    cases = [
        ({"id": "x1", "queue": "nope"}, 404, "unknown_queue"),
        ({"id": "x2", "queue": "support", "medium": "voice"}, 422, "medium_not_served"),
        ({"id": "ok1", "queue": "loans"}, 409, "already_exists"),
        ({"id": "bad id!", "queue": "loans"}, 422, "invalid_request"),
        ({"id": "x3", "queue": "loans", "colour": "red"}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        r = client.post("/v1/interactions", json=body, headers=KEY)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (body, r.text)
    assert client.get("/v1/interactions/ok1", headers=KEY).json()["status"] == "waiting"
    r = client.put("/v1/agents/ana/presence", json={"presence": "napping"}, headers=KEY)
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_presence"
    assert (
        client.put("/v1/agents/zed/presence", json={"presence": "away"}, headers=KEY).status_code
        == 404
    )
    assert (
        client.post("/v1/interactions/ok1/abandon", headers=KEY).json()["interaction"]["status"]
        == "abandoned"
    )
    svc = client.get("/v1/queues/loans/service", headers=KEY).json()
    assert svc["arrived"] == 1 and svc["abandoned"] == 1 and svc["abandonmentRate"] == 1.0


def _handled(client: TestClient, iid: str, agent: str = "ana") -> None:
    presence(client, agent, "available")
    arrive(client, iid)
    code = "loan-sold"
    assert (
        client.post(
            f"/v1/interactions/{iid}/end", json={"wrapUpCode": code}, headers=KEY
        ).status_code
        == 200
    )


LOAN_VALUE = kpi_outcome_id("loan-value")


def record(rid: str, conv: str, agent: str = "ana", **kw: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "outcomeId": LOAN_VALUE,
        "customerId": "cust-1",
        "associatedValue": 1200.0,
        "createdDate": "2026-11-30T10:00:00Z",
        "touchpoints": [
            {
                "conversationId": conv,
                "agentId": agent,
                "mediaType": "chat",
                "valueShare": 1.0,
                "date": "2026-11-30T09:00:00Z",
            }
        ],
        **kw,
    }


def count_attributions(client: TestClient) -> int:
    eng = create_engine(client.db_url.replace("postgresql://", "postgresql+psycopg://"))  # type: ignore[attr-defined]
    try:
        with eng.connect() as c:
            return c.execute(select(func.count()).select_from(outcome_attributions)).scalar_one()
    finally:
        eng.dispose()


def test_outcome_attributions_are_matched_idempotent_and_refused_past_the_threshold(
    client: TestClient,
) -> None:
    _handled(client, "c1")
    r = client.post("/v1/outcome-attributions", json={"records": [record("o1", "c1")]}, headers=KEY)
    assert r.json() == {"accepted": 1, "ids": ["o1"], "duplicates": [], "unmatched": []}
    r = client.post("/v1/outcome-attributions", json={"records": [record("o1", "c1")]}, headers=KEY)
    assert r.json() == {"accepted": 0, "ids": [], "duplicates": ["o1"], "unmatched": []}
    # One bad record of two is 50% > 5%: nothing of the batch is stored.
    bad = [record("o2", "c1"), record("o3", "nowhere")]
    r = client.post("/v1/outcome-attributions", json={"records": bad}, headers=KEY)
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_failures"
    assert r.json()["error"]["unmatched"][0]["reason"] == "conversation 'nowhere' is not known"
    assert count_attributions(client) == 1
    # With a looser threshold the good one lands, and the bad one is named.
    r = client.post(
        "/v1/outcome-attributions",
        json={
            "records": [record("o4", "c1"), record("o5", "c1", agent="ben")],
            "failureThreshold": 0.5,
        },
        headers=KEY,
    )
    assert r.json()["accepted"] == 1
    assert r.json()["unmatched"][0]["reason"] == (
        "conversation 'c1' was handled by 'ana', not 'ben'"
    )
    r = client.post(
        "/v1/outcome-attributions",
        json={"records": [record("o6", "c1", customerId=None)]},
        headers=KEY,
    )
    assert r.status_code == 422
    r = client.post(
        "/v1/outcome-attributions",
        json={"records": [{**record("o7", "c1"), "touchpoints": []}]},
        headers=KEY,
    )
    assert r.status_code == 422 and "touchpoints" in r.json()["error"]["path"]
    assert count_attributions(client) == 2
    # The outcome id must be a KPI's: a wrap-up KPI has none, an unknown one is refused.
    r = client.post(
        "/v1/outcome-attributions",
        json={"records": [record("o8", "c1", outcomeId="order-123")]},
        headers=KEY,
    )
    assert r.status_code == 422
    assert r.json()["error"]["unmatched"][0]["reason"].startswith(
        "outcomeId 'order-123' is not the outcome id of a KPI tracked by outcome"
    )
    # Without an id, a record is identified by what it says: posting it twice is a duplicate.
    bare = {k: v for k, v in record("", "c1").items() if k != "id"}
    first = client.post("/v1/outcome-attributions", json={"records": [bare]}, headers=KEY).json()
    again = client.post("/v1/outcome-attributions", json={"records": [bare]}, headers=KEY).json()
    assert first["accepted"] == 1 and again["duplicates"] == first["ids"]
    assert count_attributions(client) == 3


def test_readiness_says_what_is_missing(client: TestClient) -> None:
    _handled(client, "r1")
    r = client.get("/v1/kpis/loan-conversion/readiness?queue=loans", headers=KEY).json()
    assert r["ready"] is False and r["history"]["interactions"] == 1
    assert r["status"].startswith("collecting data: 90 days of history needed")
    assert "1000 interactions needed, 1 held" in r["missing"]
    assert client.get("/v1/kpis/nope/readiness?queue=loans", headers=KEY).status_code == 404


def test_the_comparison_test_reports_both_arms(client: TestClient) -> None:
    eng = create_engine(client.db_url.replace("postgresql://", "postgresql+psycopg://"))  # type: ignore[attr-defined]
    now = int(time.time() * 1000)
    rows = []
    # 56 of 70 predictive interactions sold, 48 of 80 standard ones.
    for i in range(150):
        pred = i < 70
        sold = i < 56 if pred else i < 70 + 48
        rows.append(
            {
                "id": f"cmp{i}",
                "queue": "loans",
                "medium": "chat",
                "priority": 0,
                "status": "ended",
                "arrived_at": now - 60_000,
                "assigned_at": now - 50_000,
                "ended_at": now - 10_000,
                "agent_id": "ana",
                "wrap_up_code": "loan-sold" if sold else "not-interested",
                "arm": "predictive" if pred else "standard",
            }
        )
    try:
        with eng.begin() as c:
            c.execute(interactions.insert(), rows)
    finally:
        eng.dispose()
    r = client.get("/v1/queues/loans/comparison?days=1", headers=KEY).json()
    assert r["arms"]["predictive"] == {"interactions": 70, "rate": 0.8}
    assert r["arms"]["standard"] == {"interactions": 80, "rate": 0.6}
    expected = compare(
        summarise([1.0] * 56 + [0.0] * 14), summarise([1.0] * 48 + [0.0] * 32), binary=True
    )
    assert r["uplift"] == pytest.approx(0.2)
    assert (r["ciLow"], r["ciHigh"]) == pytest.approx((expected.ci_low, expected.ci_high))
    assert r["pValue"] == pytest.approx(expected.p_value) and r["pValue"] < 0.01
    assert r["waitCostS"] == 0.0


def test_kpis_are_listed_with_their_outcome_ids_and_queues(client: TestClient) -> None:
    items = {k["name"]: k for k in client.get("/v1/kpis", headers=KEY).json()["items"]}
    assert items["loan-value"]["outcomeId"] == LOAN_VALUE
    assert items["loan-value"]["type"] == "sales_value" and items["loan-value"]["queues"] == []
    assert items["loan-conversion"]["outcomeId"] is None  # tracked by wrap-up code
    assert items["loan-conversion"]["queues"] == ["loans"]
    assert items["loan-conversion"]["successCodes"] == ["loan-sold"]
    assert client.get("/v1/kpis/first-contact-resolution", headers=KEY).json()["queues"] == [
        "support"
    ]
    r = client.get("/v1/kpis/nope", headers=KEY)
    assert r.status_code == 404 and r.json()["error"]["message"] == "kpi 'nope'"


def test_custom_kpis_over_the_api_and_a_queue_switched_to_one(client: TestClient) -> None:
    body = {"name": "retained", "type": "retention", "successCodes": ["callback"]}
    r = client.post("/v1/kpis", json=body, headers=KEY)
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "api" and r.json()["direction"] == "maximize"
    assert client.post("/v1/kpis", json=body, headers=KEY).status_code == 409
    # Every bad field is named; nothing is stored.
    r = client.post("/v1/kpis", json={"name": "x", "type": "sales_value"}, headers=KEY)
    assert r.status_code == 422 and "tracking: outcome" in r.text
    r = client.post("/v1/kpis", json={"name": "y", "type": "churn", "colour": 1}, headers=KEY)
    assert r.status_code == 422 and r.json()["error"]["path"] == "colour"
    assert {k["name"] for k in client.get("/v1/kpis", headers=KEY).json()["items"]} >= {
        "retained",
        "loan-conversion",
    }
    # The workspace's KPIs are read-only here.
    r = client.put(
        "/v1/kpis/loan-conversion", json={"type": "churn", "successCodes": ["x"]}, headers=KEY
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "defined_in_workspace"
    # A queue takes an API KPI when its agents can give the success code.
    r = client.put("/v1/queues/loans/kpi", json={"kpi": "retained"}, headers=KEY)
    assert r.status_code == 200 and r.json() == {"queue": "loans", "kpi": "retained"}
    assert client.get("/v1/kpis/retained", headers=KEY).json()["queues"] == ["loans"]
    r = client.get("/v1/kpis/retained/readiness?queue=loans", headers=KEY)
    assert r.status_code == 200 and r.json()["ready"] is False
    r = client.put("/v1/queues/support/kpi", json={"kpi": "retained"}, headers=KEY)
    assert r.status_code == 422 and "['callback'] of kpi 'retained'" in r.json()["error"]["message"]
    r = client.put("/v1/queues/loans/kpi", json={"kpi": "nope"}, headers=KEY)
    assert r.status_code == 422 and r.json()["error"]["path"] == "kpi"
    # A KPI in use cannot go, nor lose a success code its queue relies on... until the queue
    # moves back to its document's KPI.
    assert client.delete("/v1/kpis/retained", headers=KEY).status_code == 409
    r = client.put(
        "/v1/kpis/retained", json={"type": "retention", "successCodes": ["won"]}, headers=KEY
    )
    assert r.status_code == 422
    client.put("/v1/queues/loans/kpi", json={"kpi": "loan-conversion"}, headers=KEY)
    assert client.delete("/v1/kpis/retained", headers=KEY).status_code == 200
    assert client.get("/v1/kpis/retained", headers=KEY).status_code == 404
