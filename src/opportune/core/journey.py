"""The live journey of one visit: a compact state folded event by event.

Everything the condition language reads about a session lives here: its attributes
(device, geo, landing page, UTM — fixed at the start of the visit), counters per event
type, the current page, the last value of every custom attribute, the customer's traits,
and one small accumulator per journey-pattern condition (``acc``, keyed by the condition's
content hash, filled by :mod:`opportune.core.conditions`). The state is a msgspec Struct
so the Redis live store can keep it as msgpack; nothing in it grows with the visit's length.
"""

from __future__ import annotations

from typing import Any

import msgspec

Scalar = str | int | float | bool | None


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
    # Outcome name -> [probability, visit max, quantile, visit-max quantile] (scored ones).
    scores: dict[str, list[float]] = msgspec.field(default_factory=dict)
    # Fingerprint of the rules ``acc`` was built for; a mismatch means: rebuild by replay.
    rules: str = ""
    # Evaluate every rule on the next event (after a rebuild), not only the changed ones.
    full: bool = True


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
    elif event.type == "scroll":
        depth = event.attributes.get("depth")
        if isinstance(depth, int | float) and not isinstance(depth, bool):
            journey.scroll_depth = max(journey.scroll_depth, int(depth))
    if event.type == "identify":
        journey.traits.update(event.attributes)
    elif event.attributes:
        journey.attributes.update(event.attributes)
