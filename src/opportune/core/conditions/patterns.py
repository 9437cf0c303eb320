"""Journey patterns: counts of matching events, sums of an event attribute, sequences.

Each keeps a small accumulator in ``journey.acc`` under its content key, folded by
``update`` only for the events its filter can match.

>>> from opportune.core.conditions import parse_condition
>>> from opportune.core.journey import Journey
>>> errors = parse_condition({"event": {"type": "form_error"}, "atLeast": 2, "within": "1m"})
>>> j = Journey(session_id="s", started_at=0)
>>> for ts in (1_000, 2_000):
...     errors.update(j, JourneyEvent("form_error", ts))
>>> errors.holds(j, 30_000, {}), errors.holds(j, 90_000, {})
(True, False)
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from opportune.core.conditions.filters import EventFilter
from opportune.core.conditions.nodes import Context, Members, Node
from opportune.core.conditions.predicates import Predicate, _number
from opportune.core.journey import Journey, JourneyEvent


@dataclass(frozen=True, slots=True, eq=False)
class Count(Node):
    """Events matching ``filter``: at least / at most N in the visit, or within a window.

    With a window, the accumulator keeps only the latest ``keep`` matching times — enough
    to decide both bounds exactly — so it never grows with the visit.
    """

    filter: EventFilter
    at_least: int = 1
    at_most: int | None = None
    within: int | None = None
    key: str = ""
    types: frozenset[str] | None = None
    timed: bool = False
    stateful: ClassVar[bool] = True

    @property
    def keep(self) -> int:
        return max(self.at_least, (self.at_most or 0) + 1)

    def update(self, j: Journey, ev: JourneyEvent) -> None:
        if not self.filter(ev):
            return
        if self.within is None:
            j.acc[self.key] = j.acc.get(self.key, 0) + 1
            return
        times: list[int] = j.acc.setdefault(self.key, [])
        bisect.insort(times, ev.ts)
        if len(times) > self.keep:
            del times[0]

    def _decide(self, n: int) -> bool:
        return n >= self.at_least and (self.at_most is None or n <= self.at_most)

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        got = j.acc.get(self.key)
        if self.within is None:
            return self._decide(got or 0)
        if not got:
            return self._decide(0)
        start = now - self.within
        n = 0
        for t in got:
            if start <= t <= now:
                n += 1
        return self._decide(n)

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        matches = [ev.ts for ev in history if self.filter(ev)]
        if self.within is not None:
            start = now - self.within
            matches = [t for t in matches if start <= t <= now]
        return self._decide(len(matches))


@dataclass(frozen=True, slots=True, eq=False)
class Sum(Node):
    """A numeric event attribute summed over the visit's matching events (a cart's value)."""

    attribute: str
    filter: EventFilter
    test: Predicate
    key: str = ""
    types: frozenset[str] | None = None
    stateful: ClassVar[bool] = True

    def update(self, j: Journey, ev: JourneyEvent) -> None:
        if not self.filter(ev):
            return
        n = _number(ev.attributes.get(self.attribute))
        if n is not None:
            j.acc[self.key] = j.acc.get(self.key, 0.0) + n

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        return self.test._test(j.acc.get(self.key, 0.0))

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        total = 0.0
        for ev in history:
            if self.filter(ev):
                n = _number(ev.attributes.get(self.attribute))
                if n is not None:
                    total += n
        return self.test._test(total)


@dataclass(frozen=True, slots=True, eq=False)
class Sequence_(Node):
    """Steps matched in order by distinct events of the visit (in the order they were
    processed), the last at most ``within`` after the first. Once matched, it stays matched.

    The accumulator holds, per step, the latest time at which a chain of the steps before
    it could have started (a later start can only help the ``within`` bound), plus 1 once
    the whole sequence matched.
    """

    steps: tuple[EventFilter, ...]
    within: int | None = None
    key: str = ""
    types: frozenset[str] | None = None
    stateful: ClassVar[bool] = True

    def update(self, j: Journey, ev: JourneyEvent) -> None:
        acc: list[int | None] | None = j.acc.get(self.key)
        if acc is None:
            acc = [None] * len(self.steps) + [0]
            j.acc[self.key] = acc
        if acc[-1]:
            return
        last = len(self.steps) - 1
        # Backwards, so that one event advances the chain by one step at most.
        for i in range(last, -1, -1):
            if not self.steps[i](ev):
                continue
            start = ev.ts if i == 0 else acc[i - 1]
            if start is None:
                continue
            if i == last:
                if self.within is None or ev.ts - start <= self.within:
                    acc[-1] = 1
                    return
            else:
                prev = acc[i]
                if prev is None or start > prev:
                    acc[i] = start

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        acc = j.acc.get(self.key)
        return bool(acc and acc[-1])

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        # The definition itself: some increasing choice of events, one per step.
        def search(step: int, after: int, start: int | None) -> bool:
            for idx in range(after, len(history)):
                ev = history[idx]
                if not self.steps[step](ev):
                    continue
                first = ev.ts if start is None else start
                if step == len(self.steps) - 1:
                    if self.within is None or ev.ts - first <= self.within:
                        return True
                elif search(step + 1, idx + 1, first):
                    return True
            return False

        return search(0, 0, None)
