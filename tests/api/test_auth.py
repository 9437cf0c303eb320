"""Every admin router refuses a request without the right API key, in the one error shape;
the public endpoints (health, snippet) need none."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.settings import Settings

# One route of each admin router: customers, definitions, engagement, and routing's agents,
# interactions, attributions, KPIs and queues.
ADMIN = [
    ("GET", "/v1/visitors/v1"),
    ("GET", "/v1/segments"),
    ("GET", "/v1/queues"),
    ("GET", "/v1/agents"),
    ("GET", "/v1/interactions/i1"),
    ("POST", "/v1/outcome-attributions"),
    ("GET", "/v1/kpis"),
    ("GET", "/v1/queues/loans/service"),
]


def _client(tmp_path: Path, api_key: str) -> Iterator[TestClient]:
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'a.db'}",
        workspace=ws,
        data_dir=tmp_path,
        api_key=api_key,
    )
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, "k")


@pytest.fixture
def disabled(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, "")


@pytest.mark.parametrize(("method", "path"), ADMIN)
def test_admin_routes_need_the_key(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path)
    assert r.status_code == 401
    assert r.json() == {
        "error": {"code": "missing_api_key", "message": "send the X-API-Key header"}
    }
    r = client.request(method, path, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "bad_api_key", "message": "wrong API key"}}
    r = client.request(method, path, headers={"X-API-Key": "k"})
    assert r.status_code != 401


@pytest.mark.parametrize(("method", "path"), ADMIN)
def test_without_a_configured_key_only_created_keys_open_the_admin_api(
    disabled: TestClient, method: str, path: str
) -> None:
    r = disabled.request(method, path, headers={"X-API-Key": ""})
    assert r.status_code == 401
    assert r.json()["error"] == {
        "code": "bad_api_key",
        "message": "wrong API key (OPPORTUNE_API_KEY is not set: create keys with "
        "`opportune keys create`)",
    }


def test_public_endpoints_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/sdk/opportune.js").status_code == 200
    r = client.get("/sdk/opportune-widget.js")
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    assert r.headers["cache-control"] == "public, max-age=300"
