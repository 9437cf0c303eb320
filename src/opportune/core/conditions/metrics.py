"""Metric conditions: counts, scroll depth, visit number and times, read off the journey.

>>> from opportune.core.conditions.predicates import Predicate
>>> from opportune.core.journey import Journey
>>> Metric("timeOnSite", Predicate("gte", 60_000)).holds(Journey("s", started_at=0), 90_000, {})
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opportune.core.conditions.nodes import Context, Members, Node
from opportune.core.conditions.predicates import Predicate
from opportune.core.conditions.vocabulary import COUNTED
from opportune.core.journey import Journey, JourneyEvent


def _metric_reader(name: str) -> Callable[[Journey, int], int | None]:
    """A metric's value now; None: no value (time on page before any page)."""
    if name == "events":
        return lambda j, now: sum(j.counts.values())
    if name in COUNTED:
        etype = COUNTED[name]
        return lambda j, now: j.counts.get(etype, 0)
    if name == "scrollDepth":
        return lambda j, now: j.scroll_depth
    if name == "visitNumber":
        return lambda j, now: j.visit_number
    if name == "timeOnSite":
        return lambda j, now: now - j.started_at
    return lambda j, now: None if j.url is None else now - j.page_at  # timeOnPage


@dataclass(frozen=True, slots=True, eq=False)
class Metric(Node):
    name: str
    test: Predicate
    types: frozenset[str] | None = frozenset()
    timed: bool = False
    _get: Callable[[Journey, int], int | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_get", _metric_reader(self.name))

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        value = self._get(j, now)
        if value is None:
            return False
        return self.test._test(value)

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        name = self.name
        value: int
        if name == "events":
            value = len(history)
        elif name in COUNTED:
            value = sum(1 for ev in history if ev.type == COUNTED[name])
        elif name == "scrollDepth":
            value = max(
                (
                    int(d)
                    for ev in history
                    if ev.type == "scroll"
                    and isinstance(d := ev.attributes.get("depth"), int | float)
                    and not isinstance(d, bool)
                ),
                default=0,
            )
        elif name == "visitNumber":
            value = ctx.visit_number
        elif name == "timeOnSite":
            value = now - ctx.started_at
        else:
            pages = [ev for ev in history if ev.type == "page_view"]
            if not pages:
                return False
            value = now - pages[-1].ts
        return self.test._test(value)
