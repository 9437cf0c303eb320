"""``/docs`` works offline: the page names only this server's own files, and those files are
the vendored Swagger UI, served with their types (the CDN FastAPI uses by default is never
needed). The page itself is rendered in Chromium with the outside world blocked in
tests/e2e/test_first_hour.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opportune.api.apidocs import ASSETS, SWAGGER_DIR, SWAGGER_UI_VERSION
from opportune.api.app import create_app
from opportune.settings import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("apidocs")
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'db.sqlite'}", data_dir=tmp, retrain_interval_h=0
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_docs_reference_no_external_url(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "://" not in page.text.replace("window.location.origin", "")
    assert "//" not in " ".join(re.findall(r"(?:src|href|url)\s*[=:]\s*['\"]([^'\"]*)", page.text))
    assert '"validatorUrl": null' in page.text  # no badge fetched from an online validator
    refs = re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text)
    assert sorted(refs) == sorted(f"/docs/assets/{SWAGGER_UI_VERSION}/{n}" for n in ASSETS)
    for ref in refs:
        r = client.get(ref)
        assert r.status_code == 200, ref
        name = ref.rsplit("/", 1)[1]
        assert r.headers["content-type"] == ASSETS[name]
        assert r.content == (SWAGGER_DIR / name).read_bytes()
        assert "immutable" in r.headers["cache-control"]


def test_the_openapi_document_and_the_oauth_page_are_served(client: TestClient) -> None:
    assert client.get("/openapi.json").json()["info"]["title"] == "Opportune"
    assert "swaggerUIRedirectOauth2" in client.get("/docs/oauth2-redirect").text
    # FastAPI's /redoc would load its script from a CDN: it is not offered.
    assert client.get("/redoc").status_code == 404


def test_only_the_vendored_files_are_served(client: TestClient) -> None:
    base = f"/docs/assets/{SWAGGER_UI_VERSION}"
    assert client.get(f"{base}/LICENSE").status_code == 404
    assert client.get(f"{base}/..%2F..%2Fsettings.py").status_code == 404
    assert client.get(f"{base}/swagger-ui.js").status_code == 404


def test_the_vendored_files_say_their_version_and_licence() -> None:
    readme = (SWAGGER_DIR / "README.md").read_text("utf-8")
    assert f"swagger-ui-dist` **{SWAGGER_UI_VERSION}**" in readme
    assert "Apache-2.0" in readme and (SWAGGER_DIR / "LICENSE").is_file()
    assert (SWAGGER_DIR / "NOTICE").is_file()
    package = Path(SWAGGER_DIR).parents[1]
    assert SWAGGER_DIR.relative_to(package).parts[0] == "web"  # shipped: web/**/* is package data
