"""Predicates on one value: an operator and its operand, compiled once into a closure.

>>> parse_predicate({"startsWith": "Travel"}, [])("travel alerts")
True
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opportune.core.conditions.errors import ConditionError
from opportune.core.conditions.vocabulary import ALL_OPS, NUMBER_OPS

# Text that counts as a number: a plain decimal. Not "NaN", "Infinity" or "1_000", which
# float() accepts but a page sends only by mistake (String(NaN)); a NaN would poison a sum.
_DECIMAL = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, int | float):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, str) and _DECIMAL.match(x):
        return float(x)
    return None


@dataclass(frozen=True, slots=True)
class Predicate:
    """One operator and its operand, applied to one value (an attribute, a URL, a query).

    Case rule: text comparisons ignore case (Unicode case folding) unless ``caseSensitive``
    is true; that holds for ``regex`` and ``glob`` too. Numbers compare as numbers, also
    when the value is a numeric string. A missing value (``None``) matches only
    ``exists: false``, ``notEquals`` and ``notIn``.
    """

    op: str
    operand: Any
    case_sensitive: bool = False
    _test: Callable[[Any], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_test", self._build())

    def __call__(self, value: Any) -> bool:
        return self._test(value)

    def _fold(self, s: str) -> str:
        return s if self.case_sensitive else s.casefold()

    def _build(self) -> Callable[[Any], bool]:
        # Closures specialised per operator and option count, without generators: a
        # predicate runs for every rule and pattern an event can touch.
        op, operand = self.op, self.operand
        if op == "exists":
            want = bool(operand)
            return lambda x: (x is not None) is want
        if op in NUMBER_OPS:
            bound = float(operand)
            # n > bound is bound < n, and so on: the bound's own comparison, called in C.
            cmp: Callable[[float], bool] = {
                "gt": bound.__lt__,
                "gte": bound.__le__,
                "lt": bound.__gt__,
                "lte": bound.__ge__,
            }[op]
            finite = math.isfinite

            def numeric(x: Any) -> bool:
                t = type(x)
                if t is int:  # counts and durations: what _number gives, sooner
                    return cmp(float(x))
                if t is float:
                    return finite(x) and cmp(x)
                n = _number(x)
                return n is not None and cmp(n)

            return numeric
        if op in ("equals", "notEquals", "in", "notIn"):
            options = operand if op in ("in", "notIn") else [operand]
            match = self._matcher(options)
            if op in ("equals", "in"):
                return lambda x: x is not None and match(x)
            return lambda x: x is None or not match(x)
        texts = [self._fold(str(o)) for o in (operand if isinstance(operand, list) else [operand])]
        cs = self.case_sensitive
        if op == "contains":
            if len(texts) == 1:
                one = texts[0]
                if cs:
                    return lambda x: x is not None and one in str(x)
                return lambda x: x is not None and one in str(x).casefold()

            def contains(x: Any) -> bool:
                if x is None:
                    return False
                s = str(x) if cs else str(x).casefold()
                for t in texts:  # noqa: SIM110 - a loop is cheaper than any(...)
                    if t in s:
                        return True
                return False

            return contains
        ends = tuple(texts)
        if op == "startsWith":
            if cs:
                return lambda x: x is not None and str(x).startswith(ends)
            return lambda x: x is not None and str(x).casefold().startswith(ends)
        if op == "endsWith":
            if cs:
                return lambda x: x is not None and str(x).endswith(ends)
            return lambda x: x is not None and str(x).casefold().endswith(ends)
        flags = 0 if self.case_sensitive else re.IGNORECASE
        if op == "regex":
            patterns = [re.compile(str(o), flags) for o in as_list(operand)]
        else:  # glob: the whole value, '*' any run of characters, '?' one character
            patterns = [re.compile(fnmatch.translate(str(o)), flags) for o in as_list(operand)]
        # One pattern for all the options: one regex call per test (a hot path for URLs).
        joined = re.compile("|".join(f"(?:{p.pattern})" for p in patterns), flags)
        if op == "regex":
            search = joined.search
            return lambda x: x is not None and search(str(x)) is not None
        whole = joined.match
        return lambda x: x is not None and whole(str(x)) is not None

    def _matcher(self, options: Sequence[Any]) -> Callable[[Any], bool]:
        """Whether a value (not None) equals one of ``options``."""
        if all(_compares_as_text(o) for o in options):
            # Text options only: one set lookup stands for comparing with each in turn.
            texts = frozenset(self._fold(str(o)) for o in options)
            if self.case_sensitive:
                return lambda x: not isinstance(x, bool) and str(x) in texts
            return lambda x: not isinstance(x, bool) and str(x).casefold() in texts
        eq = [self._equals(o) for o in options]
        if len(eq) == 1:
            return eq[0]

        def any_of(x: Any) -> bool:
            for e in eq:  # noqa: SIM110 - a loop is cheaper than any(...)
                if e(x):
                    return True
            return False

        return any_of

    def _equals(self, option: Any) -> Callable[[Any], bool]:
        if isinstance(option, bool):
            return lambda x: x is option
        n = _number(option)
        if n is not None and not isinstance(option, str):
            return lambda x: _number(x) == n
        text = self._fold(str(option))
        return lambda x: not isinstance(x, bool) and self._fold(str(x)) == text


def _compares_as_text(option: Any) -> bool:
    """Whether :meth:`Predicate._equals` compares ``option`` as text (not as a boolean or
    a number)."""
    if isinstance(option, bool):
        return False
    return isinstance(option, str) or _number(option) is None


def as_list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else [x]


def parse_predicate(
    raw: Any, path: list[str | int], *, default_op: str = "equals", allowed: Sequence[str] = ALL_OPS
) -> Predicate:
    """A predicate from ``{op: operand, caseSensitive?: bool}`` or a bare value."""
    if not isinstance(raw, dict):
        raw = {default_op: raw}
    case = raw.get("caseSensitive", False)
    if not isinstance(case, bool):
        raise ConditionError([*path, "caseSensitive"], "must be true or false")
    ops = [k for k in raw if k != "caseSensitive"]
    for k in ops:
        if k not in allowed:
            raise ConditionError([*path, k], f"unknown operator; one of {', '.join(allowed)}")
    if len(ops) != 1:
        raise ConditionError(path, f"exactly one operator is needed; one of {', '.join(allowed)}")
    op = ops[0]
    operand = raw[op]
    at = [*path, op]
    if op == "exists":
        if not isinstance(operand, bool):
            raise ConditionError(at, "must be true or false")
    elif op in NUMBER_OPS:
        if _number(operand) is None or isinstance(operand, str):
            raise ConditionError(at, f"a number is expected, not {operand!r}")
    elif op in ("equals", "notEquals") and isinstance(operand, list | dict):
        alt = "in" if op == "equals" else "notIn"
        raise ConditionError(at, f"one value is expected; for a list use {alt!r}")
    elif op in ("in", "notIn"):
        if not isinstance(operand, list) or not operand:
            raise ConditionError(at, "a non-empty list is expected")
        for i, o in enumerate(operand):
            _scalar(o, [*at, i])
    else:
        for i, o in enumerate(as_list(operand)):
            _scalar(o, [*at, i] if isinstance(operand, list) else at)
            if op in ("regex", "glob", "contains", "startsWith", "endsWith") and not isinstance(
                o, str
            ):
                raise ConditionError(at, f"text is expected, not {o!r}")
            if op == "regex":
                try:
                    re.compile(o)
                except re.error as exc:
                    raise ConditionError(at, f"not a valid regular expression: {exc}") from None
        if isinstance(operand, list) and not operand:
            raise ConditionError(at, "a non-empty list is expected")
    return Predicate(op, operand, case)


def _scalar(x: Any, path: list[str | int]) -> None:
    if not isinstance(x, str | int | float | bool):
        raise ConditionError(path, f"a text, number or true/false is expected, not {x!r}")
