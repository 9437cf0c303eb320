"""The demo website under ``/demo/``: templates rendered with one layout, the CSS a file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opportune.api.app import DEMO_DIR, create_app
from opportune.api.demo import render_pages
from opportune.settings import Settings
from opportune.sim.site import PAGES

NAV = ["index.html", "product.html", "apply.html", "help.html", "login.html"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("demo")
    settings = Settings(database_url=f"sqlite:///{tmp}/db.sqlite", data_dir=tmp, api_key="k")
    with TestClient(create_app(settings)) as c:
        yield c


def test_every_page_the_simulator_visits_is_served_with_its_title(client: TestClient) -> None:
    for path, title in set(PAGES.values()):
        r = client.get(path + "?q=loan")
        assert r.status_code == 200, path
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert f"<title>{title}</title>" in r.text


def test_the_index_answers_at_the_folder_and_the_folder_without_a_slash_redirects(
    client: TestClient,
) -> None:
    assert client.get("/demo/").text == client.get("/demo/index.html").text
    r = client.get("/demo", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"].endswith("/demo/")
    assert client.head("/demo/index.html").status_code == 200


def test_the_stylesheet_is_a_static_file(client: TestClient) -> None:
    r = client.get("/demo/style.css")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
    assert r.text == (DEMO_DIR / "static" / "style.css").read_text()


@pytest.mark.parametrize(
    "path", ["/demo/nope.html", "/demo/_layout.html", "/demo/templates/index.html", "/demo/apply"]
)
def test_layouts_templates_and_unknown_pages_are_not_found(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_every_page_has_the_layout_the_snippet_and_one_current_nav_link() -> None:
    pages = render_pages(DEMO_DIR / "templates")
    assert set(pages) == {p.name for p in (DEMO_DIR / "templates").glob("[!_]*.html")}
    for name, html in pages.items():
        assert html.startswith("<!doctype html>") and html.endswith("</html>\n"), name
        assert html.count("opportune('init', {siteKey: 'demo-site-key'") == 1, name
        assert html.count("<footer>") == 1 and html.count("<main>") == 1, name
        links = re.findall(r'<a href="([a-z]+\.html)"( aria-current="page")?>', html)
        nav = [href for href, _ in links if href in NAV]
        assert nav[:1] == ["index.html"], name  # the logo
        current = [href for href, cur in links if cur]
        assert len(current) <= 1, name
    assert "requireConsent: true, honorDoNotTrack: true" in pages["consent.html"]
    assert 'href="apply.html" aria-current="page"' in pages["confirmation.html"]


def test_templates_are_autoescaped(tmp_path: Path) -> None:
    (tmp_path / "_layout.html").write_text(
        "<title>{{ title }}</title>{% block content %}{% endblock %}"
    )
    (tmp_path / "p.html").write_text(
        '{% extends "_layout.html" %}{% set title = "<b>&" %}{% block content %}ok{% endblock %}'
    )
    assert render_pages(tmp_path) == {"p.html": "<title>&lt;b&gt;&amp;</title>ok"}
