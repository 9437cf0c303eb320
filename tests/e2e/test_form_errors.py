"""Form errors as the snippet reports them, in real Chromium against the real server: the
same error again within 2 s is one event, any other error is recorded at once, and the
rule is the one docs/snippet.md states (the window read from the snippet itself)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OUTBOX_KEY = "opp_outbox:demo-site-key"


def _window_ms() -> int:
    """The snippet's window for a repeated error, from its source."""
    source = (ROOT / "src/opportune/sdk/opportune.js").read_text("utf-8")
    [ms] = re.findall(r"now\(\) - \(errorKeys\[key\] \|\| 0\) < (\d+)\)", source)
    return int(ms)


def test_the_docs_state_the_snippets_rule_for_repeated_errors() -> None:
    doc = (ROOT / "docs/snippet.md").read_text("utf-8")
    seconds = _window_ms() / 1000
    assert f"**One `form_error` per error in {seconds:g} s.**" in doc
    assert f"within {seconds:g} s is not sent again" in doc  # the table of events


def _errors(server: Any, context: Any) -> list[tuple[str, str | None, str | None]]:
    [vid] = [c["value"] for c in context.cookies() if c["name"] == "opp_vid"]
    return [
        (e["data"]["field"], e["data"].get("message"), e["data"].get("reason"))
        for e in server.events_of_visitor(vid)
        if e["type"] == "form_error"
    ]


def _send(page: Any) -> None:
    page.evaluate("opportune('flush')")
    page.wait_for_function(f"() => localStorage.getItem({OUTBOX_KEY!r}) === null")


def test_a_repeated_error_is_one_event_and_every_other_error_is_recorded(
    server: Any, browser: Any
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.base}/demo/apply.html")
    page.wait_for_function("() => window.opportune && window.opportune.loaded")
    page.evaluate(
        """() => {
          const e = (field, message) => opportune('formError', {form: 'loan', field, message});
          e('amount', 'Enter an amount');
          e('amount', 'Enter an amount');        // the same, at once: dropped
          e('email', 'Enter an email');          // another field: recorded
          e('amount', 'At most 50,000');         // another message: recorded
        }"""
    )
    _send(page)
    # The browser's own validation: one invalid field checked three times in a row.
    page.evaluate(
        """() => {
          const f = document.createElement('form');
          f.name = 'news';
          const i = document.createElement('input');
          i.name = 'mail'; i.type = 'email'; i.required = true;
          f.appendChild(i); document.body.appendChild(f);
          f.checkValidity(); f.checkValidity(); f.checkValidity();
        }"""
    )
    _send(page)
    page.wait_for_timeout(_window_ms() + 200)
    page.evaluate(
        "opportune('formError', {form: 'loan', field: 'amount', message: 'Enter an amount'})"
    )
    _send(page)
    assert _errors(server, context) == [
        ("amount", "Enter an amount", None),
        ("email", "Enter an email", None),
        ("amount", "At most 50,000", None),
        ("mail", None, "valueMissing"),
        ("amount", "Enter an amount", None),  # the same error, after the window: again
    ]
    context.close()
