"""Site key rotation: a site's previous keys keep working until their ``validUntil``, then
get 403 ``site_key_expired``; the workspace refuses a key two sites would share."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opportune.api.app import create_app
from opportune.settings import Settings
from opportune.workspace import ConfigError, load_workspace

ORIGIN = "https://shop.example"
SITE_YAML = f"""
kind: site
name: shop
key: shop-key-2027
previousKeys:
  - key: shop-key-2026
    validUntil: 2999-01-01T00:00:00Z
  - key: shop-key-2025
    validUntil: 2020-03-01T12:00:00+00:00
origins: [{ORIGIN}]
"""


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "sites.yaml").write_text(SITE_YAML)
    with TestClient(create_app(Settings(workspace=ws, data_dir=tmp_path))) as c:
        yield c


def post(c: TestClient, key: str, event: str) -> object:
    t = int(time.time() * 1000)
    body = {
        "siteKey": key,
        "visitorId": "v1",
        "sentAt": t,
        "events": [{"id": event, "type": "page_view", "ts": t, "url": ORIGIN}],
    }
    return c.post("/v1/events", content=json.dumps(body), headers={"origin": ORIGIN})


def test_current_and_unexpired_previous_keys_are_accepted(client: TestClient) -> None:
    assert post(client, "shop-key-2027", "e1").json()["accepted"] == 1  # type: ignore[attr-defined]
    assert post(client, "shop-key-2026", "e2").json()["accepted"] == 1  # type: ignore[attr-defined]
    assert client.get("/v1/widget", params={"siteKey": "shop-key-2026"}).status_code == 200


def test_an_expired_previous_key_is_refused_naming_the_rotation(client: TestClient) -> None:
    r = post(client, "shop-key-2025", "e3")
    assert r.status_code == 403  # type: ignore[attr-defined]
    assert r.json()["error"] == {  # type: ignore[attr-defined]
        "code": "site_key_expired",
        "message": "this key of site 'shop' was replaced and stopped working at "
        "2020-03-01T12:00:00Z; use the site's current key",
        "path": "$.siteKey",
    }
    assert client.get("/v1/widget", params={"siteKey": "shop-key-2025"}).status_code == 404
    r = post(client, "never-a-key", "e4")
    assert r.json()["error"]["code"] == "unknown_site_key"  # type: ignore[attr-defined]


def test_keys_are_unique_across_sites_and_rotations(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SITE_YAML)
    (tmp_path / "b.yaml").write_text(
        f"kind: site\nname: blog\nkey: shop-key-2026\norigins: [{ORIGIN}]\n"
    )
    with pytest.raises(ConfigError, match="site key 'shop-key-2026' already used by site"):
        load_workspace(tmp_path)


def test_a_previous_key_needs_a_time_zone_and_differs_from_the_current(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SITE_YAML.replace("2999-01-01T00:00:00Z", "2999-01-01"))
    with pytest.raises(ConfigError, match="give a time zone"):
        load_workspace(tmp_path)
    (tmp_path / "a.yaml").write_text(SITE_YAML.replace("key: shop-key-2026", "key: shop-key-2027"))
    with pytest.raises(ConfigError, match="listed twice"):
        load_workspace(tmp_path)
