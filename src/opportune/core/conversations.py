"""Conversations: the states a web chat moves through, the rules of its messages, and when a
visitor who went quiet counts as gone.

A conversation starts with the bot (or straight in the queue when a chat offer has no bot),
is routed to an agent, who accepts it and talks with the visitor, then wraps it up with a
code; it ends *closed* or, if the visitor left before any agent took part, *abandoned*. The
routing itself (which agent) is ``core.routing``'s; this module only says which moves are
allowed, so every caller — the WebSocket handlers, the REST API, the simulator — refuses the
same impossible ones with the same words.

>>> move("bot", "escalate")
'queued'
>>> move("active", "end")
'wrap_up'
>>> move("closed", "send")
Traceback (most recent call last):
...
opportune.core.conversations.ConversationError: the conversation is closed: it takes no messages
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final, Literal

State = Literal["bot", "queued", "assigned", "active", "wrap_up", "closed", "abandoned"]
Move = Literal[
    "escalate",  # the visitor (or the bot) asks for a person
    "route",  # the router chose an agent
    "accept",  # the agent took it
    "requeue",  # the agent declined, or did not answer in time
    "end",  # visitor or agent ended it
    "leave",  # the visitor was gone longer than the grace period
    "wrap_up",  # the agent recorded the wrap-up code
    "send",  # a message (allowed only while someone can read it)
    "transfer",  # to another queue: routed again, the transcript kept
]
Sender = Literal["visitor", "agent", "bot", "system"]

STATES: Final[tuple[State, ...]] = (
    "bot",
    "queued",
    "assigned",
    "active",
    "wrap_up",
    "closed",
    "abandoned",
)
ENDED: Final[frozenset[State]] = frozenset({"closed", "abandoned"})

# (state, move) -> next state. Anything absent is refused. Leaving before an agent joined is
# an abandonment; leaving a conversation an agent is in still asks the agent for a wrap-up
# code, since the KPI label comes from it.
_MOVES: Final[dict[tuple[State, Move], State]] = {
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

MAX_TEXT: Final = 4000  # characters in one message
MAX_CLIENT_ID: Final = 64


class ConversationError(ValueError):
    """A move or a message the conversation's state (or the rules) do not allow."""


def move(state: State, what: Move) -> State:
    """The state after ``what``, or :class:`ConversationError` saying why it is refused."""
    nxt = _MOVES.get((state, what))
    if nxt is not None:
        return nxt
    if what == "send":
        raise ConversationError(f"the conversation is {_words(state)}: it takes no messages")
    raise ConversationError(f"cannot {what.replace('_', ' ')}: the conversation is {_words(state)}")


def allowed(state: State) -> frozenset[Move]:
    """The moves a conversation in ``state`` accepts (for the UI's buttons).

    >>> sorted(allowed("assigned"))
    ['accept', 'end', 'leave', 'requeue', 'send', 'transfer']
    """
    return frozenset(m for (s, m) in _MOVES if s == state)


def _words(state: State) -> str:
    return state.replace("_", " ") if state != "wrap_up" else "in wrap-up"


@dataclass(frozen=True, slots=True)
class Draft:
    """A message as a client sent it, checked: what the store is asked to append."""

    client_id: str
    sender: Sender
    text: str


def check_text(text: object, *, field: str = "text") -> str:
    """The message text, or :class:`ConversationError` naming what is wrong with it.

    Text is kept exactly as typed (pages show it as text, never as markup) except that
    control characters other than newline and tab are refused: a NUL is not storable on
    PostgreSQL, and the others are invisible tricks rather than words.

    >>> check_text("  hello <b>there</b>  ")
    'hello <b>there</b>'
    >>> check_text("")
    Traceback (most recent call last):
    ...
    opportune.core.conversations.ConversationError: text: empty
    """
    if not isinstance(text, str):
        raise ConversationError(f"{field}: expected a string")
    text = text.strip()
    if not text:
        raise ConversationError(f"{field}: empty")
    if len(text) > MAX_TEXT:
        raise ConversationError(f"{field}: {len(text)} characters, at most {MAX_TEXT}")
    for i, ch in enumerate(text):
        if ch not in "\n\t" and unicodedata.category(ch) == "Cc":
            raise ConversationError(f"{field}: control character U+{ord(ch):04X} at {i}")
    return text


def check_client_id(value: object) -> str:
    """A client-made message id: what makes a resend a duplicate rather than a new message.

    >>> check_client_id("m-01HZX")
    'm-01HZX'
    """
    if not isinstance(value, str) or not value:
        raise ConversationError("id: expected a non-empty string")
    if len(value) > MAX_CLIENT_ID:
        raise ConversationError(f"id: {len(value)} characters, at most {MAX_CLIENT_ID}")
    if not all(c.isascii() and (c.isalnum() or c in "-_.:") for c in value):
        raise ConversationError("id: only letters, digits and - _ . : are allowed")
    return value


def draft(client_id: object, sender: Sender, text: object) -> Draft:
    """A checked message draft."""
    return Draft(check_client_id(client_id), sender, check_text(text))


def gone(state: State, *, last_seen_ms: int, now_ms: int, grace_ms: int) -> bool:
    """Whether a visitor silent since ``last_seen_ms`` has left the conversation for good.

    Only a conversation the visitor still takes part in can be left; an ended one or one in
    wrap-up (the visitor's part is over) is never "gone".

    >>> gone("queued", last_seen_ms=0, now_ms=60_001, grace_ms=60_000)
    True
    >>> gone("wrap_up", last_seen_ms=0, now_ms=10**9, grace_ms=60_000)
    False
    """
    if state in ENDED or state == "wrap_up":
        return False
    return now_ms - last_seen_ms > grace_ms
