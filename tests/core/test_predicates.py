"""The predicates' specialised closures against a plain reading of their rules.

``Predicate`` compiles each operator into a closure tuned for the hot path (set lookups
for text options, the bound's own comparison for numbers, no generators). The reference
here is the straightforward reading the closures replaced; Hypothesis checks that both
answer the same for any operand and any value, including the awkward ones (booleans
next to numbers, numeric text, NaN and infinities, non-ASCII case folding).
"""

from __future__ import annotations

import fnmatch
import math
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from opportune.core.conditions import (
    NUMBER_OPS,
    Attribute,
    Metric,
    Predicate,
    _number,
    parse_condition,
)
from opportune.core.journey import Journey


def reference(p: Predicate, x: Any) -> bool:
    """What each operator means, read literally (one option at a time)."""
    op, operand = p.op, p.operand

    def fold(s: str) -> str:
        return s if p.case_sensitive else s.casefold()

    if op == "exists":
        return (x is not None) is bool(operand)
    if op in NUMBER_OPS:
        n = _number(x)
        bound = float(operand)
        if n is None:
            return False
        return {"gt": n > bound, "gte": n >= bound, "lt": n < bound, "lte": n <= bound}[op]
    if op in ("equals", "notEquals", "in", "notIn"):
        options = operand if op in ("in", "notIn") else [operand]

        def equals(option: Any) -> bool:
            if isinstance(option, bool):
                return x is option
            n = _number(option)
            if n is not None and not isinstance(option, str):
                return _number(x) == n
            return not isinstance(x, bool) and fold(str(x)) == fold(str(option))

        if op in ("equals", "in"):
            return x is not None and any(equals(o) for o in options)
        return x is None or not any(equals(o) for o in options)
    texts = [fold(str(o)) for o in (operand if isinstance(operand, list) else [operand])]
    if x is None:
        return False
    value = fold(str(x))
    if op == "contains":
        return any(t in value for t in texts)
    if op == "startsWith":
        return any(value.startswith(t) for t in texts)
    if op == "endsWith":
        return any(value.endswith(t) for t in texts)
    flags = 0 if p.case_sensitive else re.IGNORECASE
    options = operand if isinstance(operand, list) else [operand]
    if op == "regex":
        return any(re.search(str(o), str(x), flags) for o in options)
    return any(re.match(fnmatch.translate(str(o)), str(x), flags) for o in options)


WORDS = st.sampled_from(["Loan", "loan", "LOAN", "straße", "STRASSE", "5", "5.0", "1e3", "", "a"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0, 1, 5, 1000, 1.0, 0.0, -0.0, True, False]),
    WORDS,
    st.text(max_size=6),
)
TEXT_OPS = ("contains", "startsWith", "endsWith", "glob", "regex")


@st.composite
def predicates(draw: st.DrawFn) -> Predicate:
    op = draw(st.sampled_from([*TEXT_OPS, "equals", "notEquals", "in", "notIn", *NUMBER_OPS]))
    case = draw(st.booleans())
    if op in NUMBER_OPS:
        operand: Any = draw(st.one_of(st.integers(-5, 1000), st.floats(-10, 1e4)))
    elif op in ("in", "notIn"):
        operand = draw(st.lists(SCALARS.filter(lambda v: v is not None), min_size=1, max_size=4))
    elif op in ("equals", "notEquals"):
        operand = draw(SCALARS.filter(lambda v: v is not None))
    elif op == "regex":
        operand = draw(st.sampled_from(["^lo", "an$", "[0-9]+", "ß"]))
        operand = draw(st.sampled_from([operand, [operand, "x"]]))
    else:
        operand = draw(st.one_of(WORDS, st.lists(WORDS, min_size=1, max_size=3)))
    if op == "glob" and isinstance(operand, list):
        operand = [f"*{o}*" for o in operand]
    return Predicate(op, operand, case)


@settings(max_examples=600, deadline=None)
@given(predicates(), st.lists(SCALARS, min_size=1, max_size=8))
def test_predicates_answer_as_their_plain_reading(p: Predicate, values: list[Any]) -> None:
    for x in values:
        assert p(x) == reference(p, x), (p, x)


def test_numbers_compare_exactly_at_the_bound() -> None:
    gte = Predicate("gte", 3)
    assert [gte(v) for v in (2, 3, 3.0, 2.999, "3", True, math.inf, math.nan)] == [
        False,
        True,
        True,
        False,
        True,
        False,
        False,
        False,
    ]


def test_readers_are_chosen_once_per_name() -> None:
    j = Journey(session_id="s", started_at=1_000, facts={"device": "mobile"})
    j.attributes["plan"] = "gold"
    j.traits["tier"] = "vip"
    j.counts.update({"page_view": 3, "click": 2})
    j.url, j.page_at = "https://b/p", 4_000

    def holds(raw: dict[str, Any], now: int = 10_000) -> bool:
        node = parse_condition(raw)
        assert isinstance(node, Attribute | Metric)
        return node.holds(j, now, {})

    assert holds({"attribute": "attributes.plan", "equals": "GOLD"})
    assert holds({"attribute": "traits.tier", "in": ["vip", "x"]})
    assert holds({"attribute": "currentUrl", "glob": "*/p"})
    assert holds({"attribute": "device", "equals": "mobile"})
    assert not holds({"attribute": "identified", "equals": True})
    assert holds({"metric": "events", "equals": 5})
    assert holds({"metric": "pageViews", "gte": 3})
    assert holds({"metric": "timeOnSite", "gte": "9s"})
    assert holds({"metric": "timeOnPage", "equals": "6s"})
    j.url = None
    assert not holds({"metric": "timeOnPage", "gte": 0})
