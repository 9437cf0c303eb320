"""The snippet as a browser receives it: minified, compressed, under 8 KB on the wire, and a
second visit revalidates it (304) instead of downloading it again."""

from __future__ import annotations

from typing import Any

import httpx

BUDGET = 8 * 1024


def test_the_browser_downloads_under_8kb_and_the_snippet_works(server: Any, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    with page.expect_response(lambda r: r.url.endswith("/sdk/opportune.js")) as got:
        page.goto(f"{server.base}/demo/index.html")
    response = got.value
    response.finished()
    sizes = response.request.sizes()
    headers = response.all_headers()
    assert response.status == 200
    assert headers["content-encoding"] in ("br", "gzip"), headers
    wire = sizes["responseBodySize"] + sizes["responseHeadersSize"]
    assert sizes["responseBodySize"] > 0 and wire <= BUDGET, sizes
    # The minified snippet runs: it replaced the loader's stub and sends the page view.
    page.wait_for_function("window.opportune && window.opportune.loaded === true")
    with page.expect_request(lambda r: r.url.endswith("/v1/events") and r.method == "POST"):
        page.get_by_role("link", name="Personal loan").first.click()
    assert errors == [], errors
    context.close()


def test_a_revisit_revalidates_with_the_etag_and_the_map_names_the_source(server: Any) -> None:
    first = httpx.get(f"{server.base}/sdk/opportune.js", headers={"accept-encoding": "br"})
    assert first.status_code == 200 and first.headers["etag"]
    again = httpx.get(
        f"{server.base}/sdk/opportune.js", headers={"if-none-match": first.headers["etag"]}
    )
    assert again.status_code == 304
    smap = httpx.get(f"{server.base}/sdk/opportune.js.map").json()
    assert smap["sources"] == ["src/opportune.js"]
    source = httpx.get(f"{server.base}/sdk/src/opportune.js").text
    assert source.startswith("/*! Opportune tracking snippet")
