"""The condition node's contract, and what a from-scratch evaluation knows besides events.

Every node walks its subtree, itself first:

>>> from opportune.core.conditions import parse_condition
>>> c = parse_condition({"not": {"segment": "staff"}})
>>> [type(n).__name__ for n in c.walk()]
['Not', 'InSegment']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from opportune.core.journey import Journey, JourneyEvent, Scalar
from opportune.core.scores import Scores

Members = Mapping[str, bool]


@dataclass(frozen=True, slots=True)
class Context:
    """What a from-scratch evaluation knows besides the events: the session's facts."""

    facts: Mapping[str, Scalar]
    visit_number: int
    started_at: int
    traits: Mapping[str, Scalar] = field(default_factory=dict)
    # Outcome scores as they stood.
    scores: Mapping[str, Scores] = field(default_factory=dict)


class Node:
    """A condition. ``types``: event types that can change it (None: any); ``timed``: whether
    time alone can change it; ``refs``: segments it reads."""

    types: frozenset[str] | None = frozenset()
    timed: bool = False
    key: str = ""
    stateful: ClassVar[bool] = False

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        raise NotImplementedError

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        raise NotImplementedError

    def children(self) -> Sequence[Node]:
        return ()

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children():
            yield from child.walk()

    def update(self, j: Journey, ev: JourneyEvent) -> None:
        """Fold ``ev`` into this node's accumulator (stateful nodes only)."""
