"""What a newcomer meets first, in real Chromium against ``opportune serve``: the demo
site's search on a phone, and ``/docs`` on a machine cut off from the internet."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.e2e

PHONES = {
    "small phone": {"width": 360, "height": 740},
    "Pixel 7": {"width": 412, "height": 839},
}


@pytest.mark.parametrize("phone", PHONES)
def test_the_demo_site_can_be_searched_on_a_phone(server: Any, browser: Any, phone: str) -> None:
    context = browser.new_context(
        viewport=PHONES[phone], is_mobile=True, has_touch=True, device_scale_factor=2
    )
    page = context.new_page()
    for path in ("index.html", "product.html", "apply.html", "help.html"):
        page.goto(f"{server.base}/demo/{path}")
        box = page.get_by_role("searchbox", name="Search the site")
        assert box.is_visible(), path
        b = box.bounding_box()
        assert b is not None and b["width"] >= 100, (path, b)
        assert b["x"] >= 0 and b["x"] + b["width"] <= PHONES[phone]["width"], (path, b)
        # Nothing sticks out sideways: the page does not scroll horizontally.
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), path
    box.tap()
    box.fill("mortgage")
    box.press("Enter")
    page.wait_for_url("**/demo/search.html?q=mortgage")
    context.close()


def test_the_api_docs_render_with_the_internet_cut_off(server: Any, browser: Any) -> None:
    context = browser.new_context()
    ours = urlsplit(server.base).netloc
    outside: list[str] = []

    def only_ours(route: Any) -> None:
        url = route.request.url
        if url.startswith("data:") or urlsplit(url).netloc == ours:
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", only_ours)
    page = context.new_page()
    page.goto(f"{server.base}/docs")
    # Swagger UI drew the operations from /openapi.json: its script and styles came from us.
    page.locator(".opblock").first.wait_for(timeout=20_000)
    assert page.locator(".opblock").count() > 10
    assert page.locator(".info .title").inner_text().startswith("Opportune")
    assert outside == []
    context.close()
