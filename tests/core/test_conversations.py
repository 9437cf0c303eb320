"""The conversation's moves as a table: every allowed move, and every other one refused."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest

from opportune.core.conversations import (
    ENDED,
    STATES,
    ConversationError,
    Move,
    allowed,
    check_client_id,
    check_text,
    draft,
    gone,
    move,
)

ALLOWED = {
    ("bot", "escalate"): "queued",
    ("bot", "end"): "closed",
    ("bot", "leave"): "abandoned",
    ("bot", "send"): "bot",
    ("queued", "route"): "assigned",
    ("queued", "end"): "abandoned",
    ("queued", "leave"): "abandoned",
    ("queued", "send"): "queued",
    ("assigned", "accept"): "active",
    ("assigned", "requeue"): "queued",
    ("assigned", "end"): "abandoned",
    ("assigned", "leave"): "abandoned",
    ("assigned", "send"): "assigned",
    ("assigned", "transfer"): "queued",
    ("active", "transfer"): "queued",
    ("active", "end"): "wrap_up",
    ("active", "leave"): "wrap_up",
    ("active", "send"): "active",
    ("wrap_up", "wrap_up"): "closed",
}


@pytest.mark.parametrize(("state", "what"), list(itertools.product(STATES, get_args(Move))))
def test_every_move_from_every_state_is_the_table_or_refused(state, what) -> None:  # type: ignore[no-untyped-def]
    if (state, what) in ALLOWED:
        assert move(state, what) == ALLOWED[(state, what)]
        assert what in allowed(state)
    else:
        with pytest.raises(ConversationError) as err:
            move(state, what)
        assert state.replace("_", " ").split()[0] in str(err.value)
        assert what not in allowed(state)


def test_ended_conversations_allow_nothing_and_take_no_messages() -> None:
    for state in ENDED:
        assert allowed(state) == frozenset()
        with pytest.raises(ConversationError, match="takes no messages"):
            move(state, "send")


def test_a_wrap_up_code_is_asked_whenever_an_agent_took_part() -> None:
    # Visitor gone or chat ended while an agent was in it: the agent still wraps up.
    assert move("active", "leave") == "wrap_up"
    assert move("active", "end") == "wrap_up"
    # Before an agent joined, the visitor leaving is an abandonment, not a contact.
    for state in ("queued", "assigned"):
        assert move(state, "leave") == "abandoned"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "text: empty"),
        ("   \n ", "text: empty"),
        ("x" * 4001, "text: 4001 characters, at most 4000"),
        ("a\x00b", "text: control character U+0000 at 1"),
        ("a\x1bb", "text: control character U+001B at 1"),
        (42, "text: expected a string"),
    ],
)
def test_bad_text_is_refused_with_what_is_wrong(text, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConversationError) as err:
        check_text(text)
    assert str(err.value) == error


def test_hostile_text_is_kept_as_typed_for_pages_to_show_as_text() -> None:
    hostile = "<script>alert(1)</script>\n\t&amp; \u202e ok"
    assert check_text(hostile) == hostile
    assert check_text("x" * 4000) == "x" * 4000


@pytest.mark.parametrize(
    ("value", "error"),
    [("", "non-empty"), (None, "non-empty"), ("a" * 65, "at most 64"), ("a b", "only letters")],
)
def test_bad_client_ids_are_refused(value, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConversationError, match=error):
        check_client_id(value)


def test_a_draft_is_checked_whole() -> None:
    d = draft("m1", "visitor", " hi ")
    assert (d.client_id, d.sender, d.text) == ("m1", "visitor", "hi")


@pytest.mark.parametrize(
    ("state", "silent_ms", "expected"),
    [
        ("bot", 60_000, False),
        ("bot", 60_001, True),
        ("queued", 60_001, True),
        ("assigned", 60_001, True),
        ("active", 60_001, True),
        ("wrap_up", 10**9, False),
        ("closed", 10**9, False),
        ("abandoned", 10**9, False),
    ],
)
def test_a_visitor_is_gone_only_past_the_grace_and_only_while_taking_part(
    state, silent_ms, expected
) -> None:  # type: ignore[no-untyped-def]
    assert gone(state, last_seen_ms=1000, now_ms=1000 + silent_ms, grace_ms=60_000) is expected
