"""API keys with scopes: made by ``opportune keys``, stored only as a hash, read < write <
admin, revoked at once; ``OPPORTUNE_API_KEY`` stays an admin key beside them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.cli import main
from opportune.settings import Settings
from opportune.store import api_keys
from opportune.store.schema import api_keys as api_keys_table

SEGMENT = {"name": "tablets", "condition": {"attribute": "device", "equals": "tablet"}}


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    settings = Settings(database_url=db_url, workspace=ws, data_dir=tmp_path, api_key="k")
    with TestClient(create_app(settings)) as c:
        yield c


def _engine(c: TestClient) -> Engine:
    return c.app.app.state.runtime.ingestor.engine  # type: ignore[attr-defined,no-any-return]


def _key(c: TestClient, scope: str) -> str:
    with _engine(c).begin() as conn:
        return api_keys.create(conn, name=f"{scope} tool", scope=scope, now_ms=1)[1]


def test_each_scope_does_what_it_allows(client: TestClient) -> None:
    read, write, admin = (_key(client, s) for s in ("read", "write", "admin"))
    assert client.get("/v1/segments", headers={"X-API-Key": read}).status_code == 200
    checked = client.post("/v1/segments/validate", json=SEGMENT, headers={"X-API-Key": read})
    assert checked.status_code == 200  # checking is reading
    r = client.post("/v1/segments", json=SEGMENT, headers={"X-API-Key": read})
    assert r.status_code == 403
    assert r.json()["error"] == {
        "code": "insufficient_scope",
        "message": "this key has scope 'read'; POST /v1/segments needs scope 'write' "
        "(opportune keys create --scope write)",
        "needed": "write",
        "scope": "read",
    }
    assert client.post("/v1/segments", json=SEGMENT, headers={"X-API-Key": write}).is_success
    # Personal data needs admin: a write key is refused before anything is looked up.
    r = client.get("/v1/customers/c1/export", headers={"X-API-Key": write})
    assert r.status_code == 403 and r.json()["error"]["needed"] == "admin"
    assert client.get("/v1/customers/c1/export", headers={"X-API-Key": admin}).status_code == 404
    # The settings key is an admin key.
    assert client.get("/v1/customers/c1/export", headers={"X-API-Key": "k"}).status_code == 404


def test_the_plain_key_is_never_in_the_database(client: TestClient) -> None:
    key = _key(client, "write")
    key_id = key.split("_")[1]
    with _engine(client).connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(api_keys_table))]
    assert len(rows) == 1
    assert rows[0]["id"] == key_id and rows[0]["key_hash"] == api_keys.digest(key)
    secret = key.split("_", 2)[2]
    assert all(secret not in str(v) and key != v for v in rows[0].values())


def test_a_revoked_or_altered_key_is_refused_at_once(client: TestClient) -> None:
    key = _key(client, "read")
    headers = {"X-API-Key": key}
    assert client.get("/v1/segments", headers=headers).status_code == 200
    altered = key[:-1] + ("A" if key[-1] != "A" else "B")
    r = client.get("/v1/segments", headers={"X-API-Key": altered})
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad_api_key"
    with _engine(client).begin() as conn:
        revoked = api_keys.revoke(conn, key.split("_")[1], now_ms=2)
    assert revoked.revoked_at == 2
    assert client.get("/v1/segments", headers=headers).status_code == 401


def test_the_cli_creates_lists_and_revokes(tmp_path: Path) -> None:
    runner = CliRunner()
    opts = ["--data-dir", str(tmp_path)]
    made = runner.invoke(main, ["keys", "create", "--name", "crm sync", "--scope", "read", *opts])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    key_id = key.split("_")[1]
    assert key.startswith("opk_")
    listed = runner.invoke(main, ["keys", "list", *opts])
    assert key_id in listed.output and "read" in listed.output and key not in listed.output
    gone = runner.invoke(main, ["keys", "revoke", key_id, *opts])
    assert gone.exit_code == 0 and f"revoked read key {key_id}" in gone.output
    assert "REVOKED" in runner.invoke(main, ["keys", "list", *opts]).output
    bad = runner.invoke(main, ["keys", "revoke", "nope", *opts])
    assert bad.exit_code == 1 and "no API key with id 'nope'" in bad.output
    wrong = runner.invoke(main, ["keys", "create", "--name", "x", "--scope", "root", *opts])
    assert wrong.exit_code == 2 and "root" in wrong.output


@pytest.mark.parametrize(
    ("method", "route", "scope"),
    [
        ("GET", "/v1/segments", "read"),
        ("POST", "/v1/outcomes/estimate", "read"),
        ("PUT", "/v1/queues/{name}/presence", "write"),
        ("DELETE", "/v1/segments/{name}", "write"),
        ("DELETE", "/v1/customers/{customer_id}", "admin"),
        ("POST", "/v1/identity-log/{log_id}/split", "admin"),
    ],
)
def test_the_scope_each_route_needs(method: str, route: str, scope: str) -> None:
    from opportune.api.auth import needed_scope

    assert needed_scope(method, route) == scope
