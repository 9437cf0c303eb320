"""Attribute conditions: session facts, live attributes, custom attributes, traits.

>>> from opportune.core.conditions.predicates import Predicate
>>> from opportune.core.journey import Journey
>>> j = Journey(session_id="s", started_at=0, traits={"tier": "Gold"})
>>> Attribute("traits.tier", Predicate("equals", "gold")).holds(j, 0, {})
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opportune.core.conditions.nodes import Context, Members, Node
from opportune.core.conditions.predicates import Predicate
from opportune.core.journey import Journey, JourneyEvent


@dataclass(frozen=True, slots=True, eq=False)
class Attribute(Node):
    """A session attribute, a live one, a custom attribute (``attributes.X``: its last value
    in the visit) or a customer trait (``traits.X``)."""

    name: str
    test: Predicate
    types: frozenset[str] | None = frozenset()
    # Where the value is read, decided once from the name (not on every evaluation).
    _get: Callable[[Journey], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_get", _attribute_reader(self.name))

    def _value(self, j: Journey) -> Any:
        return self._get(j)

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        return self.test._test(self._get(j))

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        name = self.name
        value: Any
        if name.startswith("attributes."):
            key = name[11:]
            value = None
            for ev in history:
                if ev.type != "identify" and key in ev.attributes:
                    value = ev.attributes[key]
        elif name.startswith("traits."):
            key = name[7:]
            value = ctx.traits.get(key)
            for ev in history:
                if ev.type == "identify" and key in ev.attributes:
                    value = ev.attributes[key]
        elif name == "currentUrl":
            value = next((ev.url for ev in reversed(history) if ev.type == "page_view"), None)
        elif name == "identified":
            value = bool(ctx.facts.get("identified")) or any(
                ev.type == "identify" for ev in history
            )
        else:
            value = ctx.facts.get(name)
        return self.test._test(value)


def _attribute_reader(name: str) -> Callable[[Journey], Any]:
    if name.startswith("attributes."):
        key = name[11:]
        return lambda j: j.attributes.get(key)
    if name.startswith("traits."):
        key = name[7:]
        return lambda j: j.traits.get(key)
    if name == "currentUrl":
        return lambda j: j.url
    if name == "identified":
        return lambda j: bool(j.facts.get("identified")) or j.counts.get("identify", 0) > 0
    return lambda j: j.facts.get(name)
