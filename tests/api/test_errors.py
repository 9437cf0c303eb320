"""Errors of the admin API are all ``{"error": {"code", "message", ...}}``: framework
errors (unknown path, wrong method, a body that does not validate) and handlers' own."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.settings import Settings

KEY = {"X-API-Key": "k"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'a.db'}", workspace=ws, data_dir=tmp_path, api_key="k"
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_framework_errors_have_the_one_shape(client: TestClient) -> None:
    r = client.get("/v1/no-such-thing", headers=KEY)
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": "Not Found"}}
    r = client.delete("/v1/agents", headers=KEY)
    assert r.status_code == 405
    assert r.json()["error"] == {"code": "method_not_allowed", "message": "Method Not Allowed"}


def test_a_body_that_does_not_validate_names_the_field(client: TestClient) -> None:
    r = client.put("/v1/agents/ana/presence", json={"presence": "away", "x": 1}, headers=KEY)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["path"] == "body.x"
    assert err["message"] == "body.x: Extra inputs are not permitted"
    assert err["errors"] == [{"path": "body.x", "message": "Extra inputs are not permitted"}]


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "message"),
    [
        ("GET", "/v1/interactions/nope", 404, "not_found", "interaction 'nope'"),
        ("POST", "/v1/interactions/nope/abandon", 404, "not_found", "interaction 'nope' not found"),
        ("GET", "/v1/queues/nope/service", 404, "not_found", "queue 'nope'"),
        ("GET", "/v1/queues/nope/comparison", 404, "not_found", "queue 'nope'"),
        ("GET", "/v1/queues/nope/benefit", 404, "not_found", "queue 'nope'"),
        ("GET", "/v1/kpis/nope", 404, "not_found", "kpi 'nope'"),
        ("DELETE", "/v1/kpis/nope", 404, "not_found", "kpi 'nope'"),
        ("GET", "/v1/kpis/nope/readiness?queue=loans", 404, "not_found", "kpi 'nope'"),
        ("GET", "/v1/segments/nope", 404, "not_found", "segment 'nope' not found"),
        ("GET", "/v1/visitors/nope", 404, "not_found", "visitor 'nope' not found"),
        ("GET", "/v1/customers/nope", 404, "not_found", "customer 'nope' not found"),
        ("GET", "/v1/visitors/nope/explain", 404, "not_found", "visitor 'nope' not found"),
        ("POST", "/v1/webhooks/nope/retry", 404, "not_found", "delivery 'nope' not found"),
    ],
)
def test_handlers_name_what_was_not_found(
    client: TestClient, method: str, path: str, status: int, code: str, message: str
) -> None:
    r = client.request(method, path, headers=KEY)
    assert r.status_code == status, r.text
    assert r.json() == {"error": {"code": code, "message": message}}
