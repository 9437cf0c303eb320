"""Parsing and validating a condition tree: one small parser per head (``all``, ``event``...).

Each raises :class:`ConditionError` naming the offending field; the tree it returns is
immutable and evaluated by the nodes themselves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, Final

from opportune.core.conditions.attributes import Attribute
from opportune.core.conditions.durations import parse_duration
from opportune.core.conditions.errors import ConditionError
from opportune.core.conditions.filters import EventFilter, parse_filter
from opportune.core.conditions.logic import All, AnyOf, InSegment, Not
from opportune.core.conditions.metrics import Metric
from opportune.core.conditions.nodes import Node
from opportune.core.conditions.patterns import Count, Sequence_, Sum
from opportune.core.conditions.predicates import Predicate, as_list, parse_predicate
from opportune.core.conditions.scores import SCORE_FIELDS, Score
from opportune.core.conditions.vocabulary import (
    ALL_OPS,
    DURATION_METRICS,
    LIVE_ATTRIBUTES,
    MAX_COUNT,
    MAX_DEPTH,
    METRICS,
    NUMBER_OPS,
    SESSION_ATTRIBUTES,
)

HEADS: Final = (
    "all",
    "any",
    "not",
    "attribute",
    "metric",
    "returning",
    "event",
    "searched",
    "sequence",
    "sum",
    "segment",
    "score",
)
Path = list[str | int]


def _content_key(raw: Any) -> str:
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _only(raw: dict[str, Any], path: Path, allowed: Sequence[str]) -> None:
    for k in raw:
        if k not in allowed:
            raise ConditionError([*path, k], f"unknown field; here one of {', '.join(allowed)}")


def _count_arg(raw: dict[str, Any], name: str, path: Path) -> int | None:
    if name not in raw:
        return None
    n = raw[name]
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_COUNT:
        raise ConditionError([*path, name], f"a whole number from 0 to {MAX_COUNT} is expected")
    return n


def _within(raw: dict[str, Any], path: Path) -> int | None:
    return parse_duration(raw["within"], [*path, "within"]) if "within" in raw else None


def parse_condition(raw: Any, path: Sequence[str | int] = ()) -> Node:
    """Parse and validate a condition tree; raise :class:`ConditionError` on the first problem.

    >>> c = parse_condition({"all": [{"attribute": "device", "equals": "Mobile"},
    ...                              {"event": {"type": "search", "query": "travel alert"}}]})
    >>> type(c).__name__, [type(n).__name__ for n in c.children()]
    ('All', ['Attribute', 'Count'])
    """
    return _parse(raw, list(path), 0)


def _parse(raw: Any, path: Path, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise ConditionError(path, f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(raw, dict):
        raise ConditionError(
            path, f"a condition (a mapping with one of {', '.join(HEADS)}) is expected"
        )
    heads = [k for k in raw if k in HEADS]
    if len(heads) != 1:
        unknown = [k for k in raw if k not in HEADS]
        if not heads and unknown:
            raise ConditionError(
                [*path, unknown[0]], f"unknown condition; one of {', '.join(HEADS)}"
            )
        raise ConditionError(
            path, f"exactly one of {', '.join(HEADS)} is needed, found {', '.join(heads) or 'none'}"
        )
    return _PARSERS[heads[0]](raw, heads[0], path, depth)


def _group(raw: dict[str, Any], head: str, path: Path, depth: int) -> Node:
    value, at = raw[head], [*path, head]
    _only(raw, path, (head,))
    if not isinstance(value, list) or not value:
        raise ConditionError(at, "a non-empty list of conditions is expected")
    items = tuple(_parse(c, [*at, i], depth + 1) for i, c in enumerate(value))
    node: Node = All(items) if head == "all" else AnyOf(items)
    return _summarise(node, items)


def _not(raw: dict[str, Any], head: str, path: Path, depth: int) -> Node:
    value, at = raw[head], [*path, head]
    _only(raw, path, ("not",))
    item = _parse(value, at, depth + 1)
    return _summarise(Not(item), (item,))


def _attribute(raw: dict[str, Any], head: str, path: Path, depth: int) -> Node:
    value, at = raw[head], [*path, head]
    _only(raw, path, ("attribute", "caseSensitive", *ALL_OPS))
    if not isinstance(value, str):
        raise ConditionError(at, "an attribute name is expected")
    types: frozenset[str] | None
    if value in SESSION_ATTRIBUTES:
        types = frozenset()
    elif value in LIVE_ATTRIBUTES:
        types = LIVE_ATTRIBUTES[value]
    elif value.startswith("attributes.") and len(value) > 11:
        types = None
    elif value.startswith("traits.") and len(value) > 7:
        types = frozenset({"identify"})
    else:
        known = ", ".join(sorted(SESSION_ATTRIBUTES | set(LIVE_ATTRIBUTES)))
        raise ConditionError(
            at, f"unknown attribute {value!r}; one of {known}, attributes.<name>, traits.<name>"
        )
    test = parse_predicate({k: v for k, v in raw.items() if k != "attribute"}, path)
    return Attribute(value, test, types)


def _metric(raw: dict[str, Any], head: str, path: Path, depth: int) -> Node:
    value, at = raw[head], [*path, head]
    _only(raw, path, ("metric", "equals", *NUMBER_OPS))
    if not isinstance(value, str) or value not in METRICS:
        raise ConditionError(at, f"unknown metric {value!r}; one of {', '.join(METRICS)}")
    ops = {k: v for k, v in raw.items() if k != "metric"}
    if value in DURATION_METRICS:
        ops = {k: parse_duration(v, [*path, k]) for k, v in ops.items()}
    test = parse_predicate(ops, path, allowed=("equals", *NUMBER_OPS))
    mtypes, timed = METRICS[value]
    return Metric(value, test, mtypes, timed)


def _returning(raw: dict[str, Any], head: str, path: Path, depth: int) -> Node:
    value, at = raw[head], [*path, head]
    _only(raw, path, ("returning",))
    if not isinstance(value, bool):
        raise ConditionError(at, "must be true or false")
    op = "gt" if value else "lte"
    return Metric("visitNumber", Predicate(op, 1), frozenset(), False)


def _count(raw: dict[str, Any], head: str, path: Path, depth: int) -> Node:
    value, at = raw[head], [*path, head]
    _only(raw, path, (head, "atLeast", "atMost", "within"))
    if head == "event":
        flt = parse_filter(value, at)
    else:
        terms = as_list(value)
        if not terms or not all(isinstance(t, str) and t.strip() for t in terms):
            raise ConditionError(at, "a search term or a list of them is expected")
        flt = EventFilter(types=frozenset({"search"}), query=Predicate("contains", terms))
    at_least = _count_arg(raw, "atLeast", path)
    at_most = _count_arg(raw, "atMost", path)
    if at_least is None:
        at_least = 0 if at_most is not None else 1
    if at_most is not None and at_most < at_least:
        raise ConditionError([*path, "atMost"], "atMost is below atLeast: never true")
    within = _within(raw, path)
    return Count(
        flt,
        at_least,
        at_most,
        within,
        key="c" + _content_key(raw),
        types=flt.types,
        timed=within is not None,
    )


def _sequence(raw: dict[str, Any], head: str, path: Path, depth: int) -> Node:
    value, at = raw[head], [*path, head]
    _only(raw, path, ("sequence", "within"))
    if not isinstance(value, list) or len(value) < 2:
        raise ConditionError(at, "a list of at least two event filters is expected")
    steps = tuple(parse_filter(s, [*at, i]) for i, s in enumerate(value))
    stypes: frozenset[str] | None = frozenset()
    for s in steps:
        stypes = None if s.types is None or stypes is None else stypes | s.types
    return Sequence_(steps, _within(raw, path), key="q" + _content_key(raw), types=stypes)


def _sum(raw: dict[str, Any], head: str, path: Path, depth: int) -> Node:
    value, at = raw[head], [*path, head]
    _only(raw, path, ("sum", "of", *NUMBER_OPS, "equals"))
    if not isinstance(value, str) or not value:
        raise ConditionError(at, "the name of a numeric event attribute is expected")
    flt = parse_filter(raw["of"], [*path, "of"]) if "of" in raw else EventFilter()
    test = parse_predicate(
        {k: v for k, v in raw.items() if k not in ("sum", "of")},
        path,
        allowed=("equals", *NUMBER_OPS),
    )
    return Sum(value, flt, test, key="s" + _content_key(raw), types=flt.types)


# "Was on track, is now falling off it": the visit's max quantile was above X and the
# current quantile is below Y. (field, score index, operator)
_SCORE_SUGAR: Final = (("maxQuantileAbove", 3, "gt"), ("quantileBelow", 2, "lt"))


def _score(raw: dict[str, Any], head: str, path: Path, depth: int) -> Node:
    value, at = raw[head], [*path, head]
    sugar = tuple(name for name, _, _ in _SCORE_SUGAR)
    _only(raw, path, ("score", *SCORE_FIELDS, *sugar))
    if not isinstance(value, str) or not value:
        raise ConditionError(at, "the name of a scored outcome is expected")
    tests: list[tuple[int, Predicate]] = []
    for fname, idx in SCORE_FIELDS.items():
        if fname in raw:
            pred = parse_predicate(raw[fname], [*path, fname], default_op="gte", allowed=NUMBER_OPS)
            tests.append((idx, pred))
    for fname, idx, op in _SCORE_SUGAR:
        if fname in raw:
            bound = raw[fname]
            if isinstance(bound, bool) or not isinstance(bound, int | float) or not 0 <= bound <= 1:
                raise ConditionError([*path, fname], "a number from 0 to 1 is expected")
            tests.append((idx, Predicate(op, bound)))
    if not tests:
        raise ConditionError(path, f"a test is needed: one of {', '.join((*SCORE_FIELDS, *sugar))}")
    return Score(value, tuple(tests))


def _segment(raw: dict[str, Any], head: str, path: Path, depth: int) -> Node:
    value, at = raw[head], [*path, head]
    _only(raw, path, ("segment",))
    if not isinstance(value, str) or not value:
        raise ConditionError(at, "a segment name is expected")
    return InSegment(value)


_PARSERS: Final[dict[str, Callable[[dict[str, Any], str, Path, int], Node]]] = {
    "all": _group,
    "any": _group,
    "not": _not,
    "attribute": _attribute,
    "metric": _metric,
    "returning": _returning,
    "event": _count,
    "searched": _count,
    "sequence": _sequence,
    "sum": _sum,
    "segment": _segment,
    "score": _score,
}


def _summarise(node: Node, items: Sequence[Node]) -> Node:
    types: frozenset[str] | None = frozenset()
    for n in items:
        types = None if n.types is None or types is None else types | n.types
    object.__setattr__(node, "types", types)
    object.__setattr__(node, "timed", any(n.timed for n in items))
    return node
