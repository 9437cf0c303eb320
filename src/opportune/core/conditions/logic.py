"""Logic over conditions: all, any, not, and membership of another segment.

>>> from opportune.core.journey import Journey
>>> j = Journey(session_id="s", started_at=0)
>>> AnyOf((InSegment("travellers"), Not(InSegment("travellers")))).holds(j, 0, {})
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opportune.core.conditions.nodes import Context, Members, Node
from opportune.core.journey import Journey, JourneyEvent


@dataclass(frozen=True, slots=True, eq=False)
class Group(Node):
    """The common shape of ``all`` and ``any``: a tuple of conditions."""

    items: tuple[Node, ...]

    def children(self) -> Sequence[Node]:
        return self.items


@dataclass(frozen=True, slots=True, eq=False)
class All(Group):
    """Every condition holds."""

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        for n in self.items:  # noqa: SIM110 - a loop is cheaper than all(...) on the hot path
            if not n.holds(j, now, members):
                return False
        return True

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        return all(n.holds_over(history, ctx, now, members) for n in self.items)


@dataclass(frozen=True, slots=True, eq=False)
class AnyOf(Group):
    """At least one condition holds."""

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        for n in self.items:  # noqa: SIM110 - a loop is cheaper than any(...) on the hot path
            if n.holds(j, now, members):
                return True
        return False

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        return any(n.holds_over(history, ctx, now, members) for n in self.items)


@dataclass(frozen=True, slots=True, eq=False)
class Not(Node):
    """The condition does not hold."""

    item: Node

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        return not self.item.holds(j, now, members)

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        return not self.item.holds_over(history, ctx, now, members)

    def children(self) -> Sequence[Node]:
        return (self.item,)


@dataclass(frozen=True, slots=True, eq=False)
class InSegment(Node):
    """The visit is in another segment (as the caller's ``members`` say)."""

    segment: str

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        return members.get(self.segment, False)

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        return members.get(self.segment, False)
