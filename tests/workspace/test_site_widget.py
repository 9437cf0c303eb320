"""The site's ``widget`` block: the look and words of its widget, each bad value named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.api.assets import SDK_DIR
from opportune.workspace import ConfigError, load_workspace
from opportune.workspace.documents import WIDGET_TEXT_KEYS

SITE = """kind: site
name: shop
key: shop-site-key
origins: [https://shop.example]
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "a.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_workspace(tmp_path)
    return [str(p) for p in info.value.problems]


def test_a_site_without_a_widget_block_has_an_empty_one(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SITE)
    widget = load_workspace(tmp_path).sites["shop"].widget
    assert widget.name is None and widget.logo is None and widget.texts == {}
    assert widget.theme.model_dump(exclude_none=True) == {}


def test_the_demo_widget_wears_the_banks_colours_and_logo() -> None:
    widget = load_workspace(EXAMPLE_WORKSPACE).sites["demo"].widget
    style = (EXAMPLE_WORKSPACE.parent.parent / "web/demo/static/style.css").read_text()
    brand = re.search(r"--brand:\s*(#[0-9a-f]{6})", style)
    ink = re.search(r"--ink:\s*(#[0-9a-f]{6})", style)
    assert brand and ink
    assert widget.theme.primary == brand.group(1) and widget.theme.text == ink.group(1)
    assert widget.name == "Opportune Bank"
    assert widget.logo == "/demo/logo.svg"
    assert (EXAMPLE_WORKSPACE.parent.parent / "web/demo/static/logo.svg").is_file()
    assert set(widget.texts) == {"en", "es"}


def test_bad_values_are_named_with_their_line(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        SITE
        + """widget:
  name: Shop
  logo: javascript:alert(1)
  theme:
    primary: "url(https://evil.example/x.png)"
    radius: 12px
    font: "x; background: red"
  texts:
    fr: {talk: Parler}
  colour: red
""",
    )
    assert got == [
        "a.yaml:9: widget.theme.primary: 'url(https://evil.example/x.png)' is not a colour "
        "(#hex, rgb(), hsl() or a colour name)",
        "a.yaml:11: widget.theme.font: 'x; background: red' is not a font list like Georgia, serif",
        "a.yaml:7: widget.logo: 'javascript:alert(1)' is not an http(s) URL or a path starting "
        "with /",
        "a.yaml:13: widget.texts.fr.[key]: Input should be 'en' or 'es'",
        "a.yaml:14: widget.colour: unknown field",
    ]


@pytest.mark.parametrize(
    ("texts", "error"),
    [
        ("{en: {tlak: Talk to us}}", "texts.en.tlak: not one of the widget's words"),
        ("{es: {talk: '  '}}", "texts.es.talk: 1 to 300 characters"),
    ],
)
def test_texts_must_be_the_widgets_words(tmp_path: Path, texts: str, error: str) -> None:
    (got,) = problems(tmp_path, SITE + f"widget:\n  texts: {texts}\n")
    assert got.startswith("a.yaml:6: widget.texts: ") and error in got, got


@pytest.mark.parametrize("logo", ["//evil.example/x.svg", "logo.svg", "https://"])
def test_a_logo_is_an_http_url_or_a_path_of_this_server(tmp_path: Path, logo: str) -> None:
    (got,) = problems(tmp_path, SITE + f"widget:\n  logo: '{logo}'\n")
    assert "is not an http(s) URL or a path starting with /" in got


def test_the_words_a_site_may_override_are_exactly_the_widgets_own() -> None:
    source = (SDK_DIR / "opportune-widget.js").read_text()
    block = source[source.index("var TEXTS = {") : source.index("var LAYOUTS")]
    for locale in ("en", "es"):
        body = block[block.index(f"{locale}: {{") :]
        body = body[: body.index("\n    }")]
        keys = set(re.findall(r"^\s+(\w+): '", body, re.M))
        assert keys == WIDGET_TEXT_KEYS, (locale, keys ^ WIDGET_TEXT_KEYS)
