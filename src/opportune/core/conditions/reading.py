"""Reading a condition tree: what it depends on, how to say it, and why it does not hold."""

from __future__ import annotations

from opportune.core.conditions.attributes import Attribute
from opportune.core.conditions.logic import All, AnyOf, InSegment, Not
from opportune.core.conditions.metrics import Metric
from opportune.core.conditions.nodes import Members, Node
from opportune.core.conditions.patterns import Count, Sequence_, Sum
from opportune.core.conditions.scores import SCORE_FIELDS, Score
from opportune.core.journey import Journey


def references(node: Node) -> set[str]:
    """The segments a condition reads."""
    return {n.segment for n in node.walk() if isinstance(n, InSegment)}


def scored_outcomes(node: Node) -> set[str]:
    """The outcomes whose scores a condition reads."""
    return {n.outcome for n in node.walk() if isinstance(n, Score)}


def stateful_nodes(node: Node) -> list[Node]:
    """Journey-pattern nodes, each once (identical ones share a key and an accumulator)."""
    seen: dict[str, Node] = {}
    for n in node.walk():
        if n.stateful and n.key not in seen:
            seen[n.key] = n
    return list(seen.values())


def describe(node: Node) -> str:
    """A short human reading of a condition, for explanations ("why this did not fire").

    >>> from opportune.core.conditions.parser import parse_condition
    >>> describe(parse_condition({"event": {"type": "form_error"}, "atLeast": 2,
    ...                           "within": "5m"}))
    'at least 2 form_error event(s) within 300 s'
    """
    if isinstance(node, All):
        return "all of (" + "; ".join(describe(n) for n in node.items) + ")"
    if isinstance(node, AnyOf):
        return "any of (" + "; ".join(describe(n) for n in node.items) + ")"
    if isinstance(node, Not):
        return f"not ({describe(node.item)})"
    if isinstance(node, Attribute | Metric):
        return f"{node.name} {node.test.op} {node.test.operand!r}"
    if isinstance(node, Count):
        kinds = "/".join(sorted(node.filter.types)) if node.filter.types else "any"
        bound = f"at least {node.at_least}"
        if node.at_most is not None:
            bound = f"{node.at_least} to {node.at_most}"
        window = f" within {node.within // 1000} s" if node.within is not None else " this visit"
        return f"{bound} {kinds} event(s){window}"
    if isinstance(node, Sequence_):
        return f"a sequence of {len(node.steps)} steps" + (
            f" within {node.within // 1000} s" if node.within is not None else ""
        )
    if isinstance(node, Sum):
        return f"sum of {node.attribute} {node.test.op} {node.test.operand!r}"
    if isinstance(node, Score):
        fields = {i: f for f, i in SCORE_FIELDS.items()}
        return f"score of {node.outcome}: " + ", ".join(
            f"{fields[i]} {t.op} {t.operand!r}" for i, t in node.tests
        )
    if isinstance(node, InSegment):
        return f"in segment {node.segment}"
    return type(node).__name__


def why_not(node: Node, j: Journey, now: int, members: Members) -> str | None:
    """The part of a condition that does not hold now (None if it holds)."""
    if node.holds(j, now, members):
        return None
    if isinstance(node, All):
        for n in node.items:
            reason = why_not(n, j, now, members)
            if reason is not None:
                return reason
    return describe(node)


def may_change_with_time(node: Node, j: Journey, now: int, members: Members) -> bool:
    """Whether a condition that does not hold now could come to hold with time alone (no
    new event): worth a recheck. A failing part that only events can change rules it out.
    """
    if not node.timed:
        return False
    if isinstance(node, All):
        timed = False
        for n in node.items:
            if n.timed:
                timed = (
                    timed or n.holds(j, now, members) or may_change_with_time(n, j, now, members)
                )
            elif not n.holds(j, now, members):
                return False
        return timed
    if isinstance(node, AnyOf):
        return any(may_change_with_time(n, j, now, members) for n in node.items)
    return True
