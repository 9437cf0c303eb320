"""The live journey of one visit: a compact state folded event by event.

Everything the condition language reads about a session lives here: its attributes
(device, geo, landing page, UTM — fixed at the start of the visit), counters per event
type, the current page, the last value of every custom attribute, the customer's traits,
and one small accumulator per journey-pattern condition (``acc``, keyed by the condition's
content hash, filled by :mod:`opportune.core.conditions`). The state is a msgspec Struct
so the Redis live store can keep it as msgpack; nothing in it grows with the visit's length.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import msgspec

from opportune.core.scores import Scores

Scalar = str | int | float | bool | None
# Words of searches, clicked elements' names and page addresses' parameters, counted per
# visit in this many hashed buckets: bounded state whatever words a site uses, and the
# outcome models' evidence of what the visitor is after (ml/features.py).
WORD_BUCKETS: Final = 64
_WORD = re.compile(r"[^\W\d_]{2,24}")
_MAX_WORDS = 8  # per text: a long click label says no more than its first words


class JourneyEvent(msgspec.Struct, frozen=True, array_like=True):
    """What the condition language sees of one event (server-clock ``ts``)."""

    type: str
    ts: int
    url: str | None = None
    name: str | None = None
    query: str | None = None
    attributes: dict[str, Scalar] = msgspec.field(default_factory=dict)
    id: str = ""


class Journey(msgspec.Struct, array_like=True):
    """The state of one visit. ``facts`` are the session's attributes, by condition name."""

    session_id: str
    started_at: int
    facts: dict[str, Scalar] = msgspec.field(default_factory=dict)
    visit_number: int = 1
    last_at: int = 0
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    scroll_depth: int = 0
    url: str | None = None
    page_at: int = 0
    attributes: dict[str, Scalar] = msgspec.field(default_factory=dict)
    traits: dict[str, Scalar] = msgspec.field(default_factory=dict)
    acc: dict[str, Any] = msgspec.field(default_factory=dict)
    # Session-level truth of every segment (name -> entered at), current memberships.
    segments: dict[str, int] = msgspec.field(default_factory=dict)
    # Outcome name -> [achieved at, value or None]; at most once per visit.
    outcomes: dict[str, list[Any]] = msgspec.field(default_factory=dict)
    # Page views per page group of the workspace (product, pricing, help, form steps...).
    groups: dict[str, int] = msgspec.field(default_factory=dict)
    # End of the visitor's previous visit (0: none), and outcomes its earlier visits achieved.
    previous_visit_at: int = 0
    past_outcomes: dict[str, int] = msgspec.field(default_factory=dict)
    # Outcome name -> its scores in this visit (scored outcomes only).
    scores: dict[str, Scores] = msgspec.field(default_factory=dict)
    # Fingerprint of the rules ``acc`` was built for; a mismatch means: rebuild by replay.
    rules: str = ""
    # Evaluate every rule on the next event (after a rebuild), not only the changed ones.
    full: bool = True
    # Hashed bucket -> count of the visit's words (see WORD_BUCKETS); last, so that states
    # saved before it existed still decode.
    words: dict[int, int] = msgspec.field(default_factory=dict)

    def is_current(self, fingerprint: str) -> bool:
        """Whether the journey was built under the rules with this fingerprint; if not, its
        accumulators mean nothing to the rules in force and it is rebuilt by replay.

        >>> Journey("s", 0, rules="r1").is_current("r1")
        True
        """
        return self.rules == fingerprint


def past_outcomes_after(past: Mapping[str, int], ended: Journey) -> dict[str, int]:
    """The visitor's outcome counts over earlier visits once ``ended`` is one of them: what
    the next visit's journey starts from (``past_outcomes``).

    >>> done = Journey("s1", 0, outcomes={"loan": [5, None]})
    >>> past_outcomes_after({"loan": 1, "call": 2}, done)
    {'loan': 2, 'call': 2}
    """
    counts = dict(past)
    for name in ended.outcomes:
        counts[name] = counts.get(name, 0) + 1
    return counts


def word_buckets(text: str) -> tuple[int, ...]:
    """The buckets of the words of ``text`` (letters only, case-folded; digits and ids
    carry no intent and would only add noise).

    >>> word_buckets("Personal loan") == word_buckets("personal LOAN 2")
    True
    """
    words = _WORD.findall(text.casefold())[:_MAX_WORDS]
    return tuple(zlib.crc32(w.encode()) % WORD_BUCKETS for w in words)


def url_word_buckets(url: str) -> tuple[int, ...]:
    """The buckets of the words in a page address's parameters (``?q=personal+loan``,
    ``?article=eligibility``), leaving out campaign tags and click ids (in the visit's
    facts already, or random) and values with digits (references, tokens)."""
    try:
        params = parse_qsl(urlsplit(url).query)
    except ValueError:
        return ()
    out: list[int] = []
    for key, value in params:
        k = key.casefold()
        if k.startswith("utm_") or k.endswith("clid") or any(c.isdigit() for c in value):
            continue
        out.extend(word_buckets(value))
    return tuple(out)


def _count_words(journey: Journey, buckets: tuple[int, ...]) -> None:
    words = journey.words
    for b in buckets:
        words[b] = words.get(b, 0) + 1


def fold(journey: Journey, event: JourneyEvent) -> None:
    """Apply one event to the journey's counters, page, attributes and traits (in place).

    ``traits`` of an identify event arrive as its attributes (see the engine).
    """
    counts = journey.counts
    counts[event.type] = counts.get(event.type, 0) + 1
    if event.ts > journey.last_at:
        journey.last_at = event.ts
    if event.type == "page_view":
        journey.url = event.url
        journey.page_at = event.ts
        if event.url and "?" in event.url:
            _count_words(journey, url_word_buckets(event.url))
    elif event.type == "search":
        if event.query:
            _count_words(journey, word_buckets(event.query))
    elif event.type == "click":
        if event.name:
            _count_words(journey, word_buckets(event.name))
    elif event.type == "scroll":
        depth = event.attributes.get("depth")
        if isinstance(depth, int | float) and not isinstance(depth, bool):
            journey.scroll_depth = max(journey.scroll_depth, int(depth))
    if event.type == "identify":
        journey.traits.update(event.attributes)
    elif event.attributes:
        journey.attributes.update(event.attributes)
