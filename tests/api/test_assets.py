"""The scripts as served: minified with a map, compressed as the browser accepts, revalidated."""

from __future__ import annotations

import gzip
import json
import os

import brotli
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from opportune.api.assets import SDK_DIR, ScriptCache, _accepted, assets_router


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(assets_router(ScriptCache()))
    return TestClient(app)


@pytest.mark.parametrize("name", ["opportune.js", "opportune-widget.js"])
def test_minified_code_is_smaller_keeps_the_licence_and_names_its_map(
    client: TestClient, name: str
) -> None:
    source = (SDK_DIR / name).read_text()
    r = client.get(f"/sdk/{name}", headers={"accept-encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    assert "content-encoding" not in r.headers
    assert len(r.content) < 0.6 * len(source.encode())
    assert r.text.startswith(source.split("\n", 1)[0])  # the /*! licence */ line
    assert r.text.rstrip().endswith(f"//# sourceMappingURL={name}.map")
    smap = client.get(f"/sdk/{name}.map").json()
    assert smap["sources"] == [f"src/{name}"] and smap["mappings"]
    assert client.get(f"/sdk/src/{name}").text == source


def test_brotli_is_preferred_then_gzip_and_both_decode_to_the_same_code(client: TestClient) -> None:
    plain = client.get("/sdk/opportune.js", headers={"accept-encoding": "identity"}).content
    br = client.get("/sdk/opportune.js", headers={"accept-encoding": "gzip, deflate, br"})
    assert br.headers["content-encoding"] == "br" and br.headers["vary"] == "Accept-Encoding"
    # httpx decodes br itself when it can; compare whichever form it hands back.
    body = br.content if br.content == plain else brotli.decompress(br.content)
    assert body == plain
    gz = client.get("/sdk/opportune.js", headers={"accept-encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip"
    assert gz.content == plain or gzip.decompress(gz.content) == plain
    assert len(gzip.compress(plain)) < 8 * 1024


def test_a_matching_etag_is_answered_304_and_a_stale_one_gets_the_body(client: TestClient) -> None:
    first = client.get("/sdk/opportune.js")
    tag = first.headers["etag"]
    again = client.get("/sdk/opportune.js", headers={"if-none-match": tag})
    assert again.status_code == 304 and again.content == b""
    weak = client.get("/sdk/opportune.js", headers={"if-none-match": f'"x", W/{tag}'})
    assert weak.status_code == 304
    stale = client.get("/sdk/opportune.js", headers={"if-none-match": '"stale"'})
    assert stale.status_code == 200 and stale.content


def test_a_changed_source_is_rebuilt(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "opportune.js").write_text("/*! v1 */\nvar a = 1;\n")
    cache = ScriptCache(tmp_path)
    first = cache.get("opportune.js")
    assert cache.get("opportune.js") is first
    (tmp_path / "opportune.js").write_text("/*! v2 */\nvar a = 2;\n")
    # Same size: the change is seen by its modification time (set apart explicitly, as
    # two writes in one clock tick can share one).
    st = (tmp_path / "opportune.js").stat()
    os.utime(tmp_path / "opportune.js", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = cache.get("opportune.js")
    assert second.code.etag != first.code.etag and b"v2" in second.code.identity
    assert json.loads(second.source_map.identity)["file"] == "opportune.js"


@pytest.mark.parametrize(
    ("header", "codings"),
    [
        ("gzip, br", {"gzip", "br"}),
        ("br;q=0, gzip;q=0.5", {"gzip"}),
        ("", set()),
        ("GZIP ; q=1.0", {"gzip"}),
        ("br;q=x", {"br"}),
    ],
)
def test_accept_encoding_is_read_with_its_weights(header: str, codings: set[str]) -> None:
    assert _accepted(header) == codings
