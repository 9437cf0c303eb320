"""The whole loop in two real Chromium contexts on one real server (issue 14's must-show):
a visitor on the demo site qualifies for the chat offer, accepts, talks to the bot, asks for
a person; the agent, signed in and available on `/agent`, gets the alert, sees the journey
and scores in the context panel, answers; messages go both ways; the visitor reloads the
page mid-chat and the conversation resumes with nothing lost or doubled; the agent sets a
wrap-up code; the interaction ends with it, and its KPI label is what `opportune train
routing` reads.

The server is this module's own (agents' presence and chats do not leak into other tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opportune.core.actionmaps import in_holdout
from opportune.store.db import make_engine
from opportune.store.routing_history import load_history
from opportune.workspace import load_workspace

pytestmark = pytest.mark.e2e

CHAT_MAP = "loan-struggle-chat"
CHAT_TITLE = "Need a hand with your application?"
PASSWORD = "loop e2e password"
HOSTILE = '<img src=x onerror="window.__xss = 1">'


@pytest.fixture(scope="module")
def own_server(
    tmp_path_factory: pytest.TempPathFactory, serve: Callable[..., Any]
) -> Iterator[tuple[Any, Path]]:
    tmp = tmp_path_factory.mktemp("loop")
    with serve(tmp) as s:
        yield s, tmp


def add_agent_user(tmp: Path, email: str, agent: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPPORTUNE_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "opportune.cli",
            "users",
            "add",
            "--email",
            email,
            "--name",
            agent.title(),
            "--role",
            "agent",
            "--agent",
            agent,
            "--password-stdin",
            "--data-dir",
            str(tmp / "data"),
            "--workspace",
            str(tmp / "workspace"),
        ],
        input=PASSWORD + "\n",
        text=True,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def wait_for(page: Any, check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        page.wait_for_timeout(100)


def console_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def test_offer_bot_person_agent_reload_wrap_up_and_the_kpi_label(
    own_server: tuple[Any, Path], browser: Any
) -> None:
    server, tmp = own_server
    add_agent_user(tmp, "ana@loop.example", "ana")

    # The agent signs in and is available.
    desk_ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    desk = desk_ctx.new_page()
    desk_errors = console_errors(desk)
    desk.goto(f"{server.base}/agent/login")
    desk.get_by_label("Email").fill("ana@loop.example")
    desk.get_by_label("Password").fill(PASSWORD)
    desk.get_by_role("button", name="Sign in").click()
    desk.wait_for_url(f"{server.base}/agent")
    wait_for(
        desk,
        lambda: desk.locator("#conn-status").get_attribute("data-state") == "online",
        "the desk's socket",
    )
    desk.select_option("#presence", "available")
    wait_for(
        desk,
        lambda: server.api("/v1/queues")["items"][0]["offering"],
        "pacing to see the agent and offer chat on loans",
    )

    # The visitor struggles on the loan form and is offered the chat.
    vid = next(f"loop{i}" for i in range(100) if not in_holdout(f"loop{i}", CHAT_MAP, 0.1))
    visit_ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    visit_ctx.add_cookies([{"name": "opp_vid", "value": vid, "url": server.base}])
    page = visit_ctx.new_page()
    visitor_errors = console_errors(page)
    page.goto(f"{server.base}/demo/apply.html")
    page.get_by_role("button", name="Continue").wait_for()
    page.fill("#amount", "500")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Enter an amount between").wait_for()
    page.fill("#amount", "")
    page.get_by_role("button", name="Continue").click()
    invitation = page.get_by_role("complementary", name=CHAT_TITLE)
    invitation.wait_for(timeout=20_000)
    invitation.get_by_role("button", name="Chat now").click()
    window = page.get_by_role("dialog", name=CHAT_TITLE)
    window.get_by_label("First name").fill(HOSTILE)
    window.get_by_label("Email").fill("maria@example.com")
    window.get_by_role("button", name="Start chat").click()

    # The bot answers first; the visitor asks a question, then for a person.
    bubbles = window.locator(".log .b")
    wait_for(page, lambda: window.locator(".log .b.bot").count() >= 1, "the bot's welcome")
    box = window.get_by_role("textbox", name="Your message")
    box.fill("what is the maximum I can borrow?")
    box.press("Enter")
    wait_for(page, lambda: window.locator(".log .b.bot").count() >= 2, "the bot's answer")
    window.get_by_role("button", name="Talk to an adviser").last.click()  # not the bot's

    # The agent is alerted, sees the context, accepts and answers.
    desk.locator("#offer-banner").wait_for(state="visible", timeout=20_000)
    desk.locator("#offer-accept").click()
    transcript = desk.locator("#transcript")
    wait_for(
        desk,
        lambda: "maximum I can borrow" in (transcript.text_content() or ""),
        "the bot's transcript on the desk",
    )
    context = desk.locator("#context")
    wait_for(
        desk,
        lambda: "apply" in (context.text_content() or "").lower(),
        "the journey (the loan form) in the context panel",
    )
    wait_for(desk, lambda: "loan" in (context.text_content() or "").lower(), "the scores")
    assert HOSTILE in (desk.locator("#chat-title").text_content() or "") or HOSTILE in (
        context.text_content() or ""
    )  # the hostile name, as text
    desk.locator("#message").fill("Hello, I am Ana. How can I help?")
    desk.locator("#send").click()
    window.locator(".log .b.agent").get_by_text("How can I help?").wait_for(timeout=15_000)
    box.fill(f"Hi {HOSTILE}")
    box.press("Enter")
    wait_for(
        desk,
        lambda: f"Hi {HOSTILE}" in (transcript.text_content() or ""),
        "the visitor's message on the desk",
    )

    # The visitor reloads mid-chat: the conversation resumes, nothing lost or doubled.
    before = bubbles.all_text_contents()
    page.reload()
    window = page.get_by_role("dialog", name=CHAT_TITLE)
    wait_for(page, lambda: window.locator(".log .b").count() >= len(before), "the transcript back")
    page.wait_for_timeout(1000)
    after = window.locator(".log .b").all_text_contents()
    assert after == before
    desk.locator("#message").fill("Still here?")
    desk.locator("#send").click()
    window.locator(".log .b.agent").get_by_text("Still here?").wait_for(timeout=15_000)
    assert window.locator(".log .b.agent").get_by_text("Still here?").count() == 1

    # The agent ends and must give a wrap-up code to close.
    desk.locator("#end-chat").click()
    desk.locator("#end-chat").click()  # a second click confirms: no chat ends by a slip
    desk.locator("#wrapup-form").wait_for(state="visible")
    desk.locator("#wrapup-submit").click()
    assert desk.locator("#wrapup-error").is_visible()  # no code, no close
    desk.select_option("#wrapup-code", "loan-sold")
    desk.locator("#wrapup-notes").fill("Wants 10k over 5 years")
    desk.locator("#wrapup-submit").click()
    wait_for(desk, lambda: desk.locator("#wrapup-form").is_hidden(), "the chat closed")

    assert page.evaluate("window.__xss") is None and desk.evaluate("window.__xss") is None
    assert [e for e in visitor_errors if "opportune" in e.lower()] == []
    assert desk_errors == []

    # The interaction ended with the code, and the KPI label training reads is that code.
    engine = make_engine(f"sqlite:///{tmp / 'data' / 'opportune.db'}")
    try:
        with engine.connect() as conn:
            kpi = load_workspace(tmp / "workspace").kpis["loan-conversion"].to_core()
            rows = load_history(conn, "loans", kpi, now_ms=int(time.time() * 1000))
    finally:
        engine.dispose()
    [row] = rows
    assert (row.agent_id, row.label) == ("ana", 1.0)
    assert row.features.get("intent:loan-amount") == 1.0
    visit_ctx.close()
    desk_ctx.close()
