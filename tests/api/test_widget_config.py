"""``GET /v1/widget``: a site's widget look and words, CORS per site, revalidated by ETag."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.api.widget_config import widget_config_router
from opportune.workspace import Site, load_workspace


@pytest.fixture(scope="module")
def client() -> TestClient:
    sites = dict(load_workspace(EXAMPLE_WORKSPACE).sites_by_key)
    bare = Site.model_validate(
        {"name": "bare", "key": "bare-site-key", "origins": ["https://bare.example"]}
    )
    sites[bare.key] = bare
    app = FastAPI()
    app.include_router(widget_config_router(sites))
    return TestClient(app)


def test_the_demo_sites_look_and_words(client: TestClient) -> None:
    r = client.get("/v1/widget", params={"siteKey": "demo-site-key"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["name"] == "Opportune Bank" and body["logo"] == "/demo/logo.svg"
    assert body["theme"]["primary"] == "#0b6e4f"
    assert body["texts"]["es"]["talk"] == "Hablar con un asesor"
    assert r.headers["cache-control"] == "public, max-age=300"
    assert "Origin" in r.headers["vary"]


def test_a_site_without_a_widget_block_gets_empty_theme_and_texts(client: TestClient) -> None:
    body = client.get("/v1/widget", params={"siteKey": "bare-site-key"}).json()
    assert body == {"theme": {}, "texts": {}}


def test_cors_only_for_the_sites_origins_and_the_servers_own(client: TestClient) -> None:
    def allowed(key: str, origin: str) -> str | None:
        r = client.get("/v1/widget", params={"siteKey": key}, headers={"origin": origin})
        assert r.status_code == 200
        return r.headers.get("access-control-allow-origin")

    assert allowed("demo-site-key", "http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert allowed("demo-site-key", "http://testserver") == "http://testserver"  # its own pages
    assert allowed("demo-site-key", "https://bare.example") is None  # another site's origin
    assert allowed("bare-site-key", "https://bare.example") == "https://bare.example"
    assert allowed("bare-site-key", "https://evil.example") is None


def test_a_matching_etag_is_answered_304(client: TestClient) -> None:
    first = client.get("/v1/widget", params={"siteKey": "demo-site-key"})
    tag = first.headers["etag"]
    again = client.get(
        "/v1/widget", params={"siteKey": "demo-site-key"}, headers={"if-none-match": f"W/{tag}"}
    )
    assert again.status_code == 304 and again.content == b""
    other = client.get("/v1/widget", params={"siteKey": "bare-site-key"})
    assert other.headers["etag"] != tag  # per site


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "missing_site_key"),
        ({"siteKey": "no-such-key"}, 404, "unknown_site_key"),
    ],
)
def test_a_missing_or_unknown_key_is_refused_by_name(
    client: TestClient, params: dict[str, str], status: int, code: str
) -> None:
    r = client.get("/v1/widget", params=params)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and r.json()["error"]["path"] == "$.siteKey"
