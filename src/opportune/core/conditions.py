"""The one condition language: segments, outcomes and (next) action maps use it.

A condition is plain data (YAML or JSON), parsed once into a tree of nodes. Each node has
two evaluators over the same definition (after Apache Unomi):

- ``holds(journey, now, members)`` — incremental, on the live :class:`Journey`. Journey
  patterns keep a small accumulator in ``journey.acc`` (keyed by the node's content hash),
  updated by ``update`` only for the events that can change it.
- ``holds_over(history, ...)`` — from scratch, over the whole list of the visit's events,
  for audience estimates over stored history, and as the reference the tests check the
  incremental one against.

Time is always an argument (``now``, ms), never read. Validation raises
:class:`ConditionError` naming the path of the offending field and the reason. The
language and its case rules are documented in ``docs/conditions.md``.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import json
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from msgspec.structs import astuple

from opportune.core.events import EVENT_TYPES as WIRE_EVENT_TYPES
from opportune.core.journey import Journey, JourneyEvent, Scalar
from opportune.core.scores import FIELD_NAMES as SCORE_NAMES
from opportune.core.scores import Scores

# Event types a filter may name: the wire model's.
EVENT_TYPES: Final = frozenset(WIRE_EVENT_TYPES)
# Session attributes (fixed at the start of the visit) by their condition name.
SESSION_ATTRIBUTES: Final = frozenset(
    {
        "device",
        "browser",
        "os",
        "country",
        "region",
        "city",
        "locale",
        "timezone",
        "landingUrl",
        "referrer",
        "referrerDomain",
        "utmSource",
        "utmMedium",
        "utmCampaign",
        "utmTerm",
        "utmContent",
    }
)
# Attributes that change during the visit, and the event types that change them.
LIVE_ATTRIBUTES: Final[dict[str, frozenset[str]]] = {
    "currentUrl": frozenset({"page_view"}),
    "identified": frozenset({"identify"}),
}
# Metrics: name -> (event types that change it, whether it changes with time alone).
METRICS: Final[dict[str, tuple[frozenset[str] | None, bool]]] = {
    "events": (None, False),
    "pageViews": (frozenset({"page_view"}), False),
    "searches": (frozenset({"search"}), False),
    "clicks": (frozenset({"click"}), False),
    "formErrors": (frozenset({"form_error"}), False),
    "formsSubmitted": (frozenset({"form_submitted"}), False),
    "formsAbandoned": (frozenset({"form_abandoned"}), False),
    "idles": (frozenset({"idle"}), False),
    "customEvents": (frozenset({"custom"}), False),
    "scrollDepth": (frozenset({"scroll"}), False),
    "visitNumber": (frozenset(), False),
    "timeOnSite": (frozenset(), True),
    "timeOnPage": (frozenset({"page_view"}), True),
}
_DURATION_METRICS: Final = frozenset({"timeOnSite", "timeOnPage"})
_COUNTED: Final = {
    "pageViews": "page_view",
    "searches": "search",
    "clicks": "click",
    "formErrors": "form_error",
    "formsSubmitted": "form_submitted",
    "formsAbandoned": "form_abandoned",
    "idles": "idle",
    "customEvents": "custom",
}
TEXT_OPS: Final = (
    "equals",
    "notEquals",
    "in",
    "notIn",
    "contains",
    "startsWith",
    "endsWith",
    "regex",
    "glob",
)
NUMBER_OPS: Final = ("gt", "gte", "lt", "lte")
ALL_OPS: Final = (*TEXT_OPS, *NUMBER_OPS, "exists")
MAX_DEPTH: Final = 12
MAX_COUNT: Final = 1000


class ConditionError(ValueError):
    """A condition that does not validate: ``path`` locates the field, e.g. ``all[2].regex``."""

    def __init__(self, path: Sequence[str | int], message: str) -> None:
        self.path = tuple(path)
        self.message = message
        super().__init__(f"{format_path(self.path)}: {message}" if self.path else message)


def format_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# ---- durations -------------------------------------------------------------------------

_UNITS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any, path: Sequence[str | int]) -> int:
    """``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"500ms"``, or a number of seconds -> ms.

    >>> parse_duration("5m", []), parse_duration(30, []), parse_duration("250ms", [])
    (300000, 30000, 250)
    """
    if isinstance(value, bool):
        raise ConditionError(path, "a duration like '30s', '5m', '2h' or '1d' is expected")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ConditionError(path, "a duration must be a finite number of seconds")
        ms = int(value * 1000)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        ms = int(float(m.group(1)) * _UNITS[m.group(2) or "s"])
    else:
        raise ConditionError(path, f"{value!r} is not a duration like '30s', '5m', '2h' or '1d'")
    if ms < 0:
        raise ConditionError(path, "a duration cannot be negative")
    return ms


# ---- predicates on one value -----------------------------------------------------------


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
            patterns = [re.compile(str(o), flags) for o in _as_list(operand)]
        else:  # glob: the whole value, '*' any run of characters, '?' one character
            patterns = [re.compile(fnmatch.translate(str(o)), flags) for o in _as_list(operand)]
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


def _as_list(x: Any) -> list[Any]:
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
        for i, o in enumerate(_as_list(operand)):
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


# ---- event filters ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a journey pattern counts: type, name, URL, query, attribute predicates."""

    types: frozenset[str] | None = None
    name: Predicate | None = None
    url: Predicate | None = None
    query: Predicate | None = None
    attributes: tuple[tuple[str, Predicate], ...] = ()

    def __call__(self, ev: JourneyEvent) -> bool:
        # Plain code, no generators: this runs for every pattern an event can touch.
        if self.types is not None and ev.type not in self.types:
            return False
        if self.name is not None and not self.name._test(ev.name):
            return False
        if self.url is not None and not self.url._test(ev.url):
            return False
        if self.query is not None and not self.query._test(ev.query):
            return False
        for key, pred in self.attributes:  # noqa: SIM110 - a loop is cheaper than all(...)
            if not pred._test(ev.attributes.get(key)):
                return False
        return True


_FILTER_FIELDS: Final = ("type", "name", "url", "query", "attributes")


def parse_filter(raw: Any, path: list[str | int]) -> EventFilter:
    if not isinstance(raw, dict):
        raise ConditionError(
            path, "an event filter (a mapping with type, name, url...) is expected"
        )
    for k in raw:
        if k not in _FILTER_FIELDS:
            raise ConditionError([*path, k], f"unknown field; one of {', '.join(_FILTER_FIELDS)}")
    types: frozenset[str] | None = None
    if "type" in raw:
        given = _as_list(raw["type"])
        if not given:
            raise ConditionError([*path, "type"], "a non-empty list of event types is expected")
        for i, t in enumerate(given):
            if not isinstance(t, str) or t not in EVENT_TYPES:
                at = [*path, "type", i] if isinstance(raw["type"], list) else [*path, "type"]
                raise ConditionError(
                    at, f"unknown event type {t!r}; one of {', '.join(sorted(EVENT_TYPES))}"
                )
        types = frozenset(given)
    attrs: list[tuple[str, Predicate]] = []
    if "attributes" in raw:
        if not isinstance(raw["attributes"], dict) or not raw["attributes"]:
            raise ConditionError([*path, "attributes"], "a mapping of attribute -> test")
        for key, test in raw["attributes"].items():
            attrs.append((str(key), parse_predicate(test, [*path, "attributes", str(key)])))
    return EventFilter(
        types=types,
        name=parse_predicate(raw["name"], [*path, "name"]) if "name" in raw else None,
        # A bare URL is a glob over the whole URL: "*/apply*".
        url=parse_predicate(raw["url"], [*path, "url"], default_op="glob")
        if "url" in raw
        else None,
        query=(
            parse_predicate(raw["query"], [*path, "query"], default_op="contains")
            if "query" in raw
            else None
        ),
        attributes=tuple(attrs),
    )


# ---- the nodes -------------------------------------------------------------------------

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


@dataclass(frozen=True, slots=True, eq=False)
class All(Node):
    items: tuple[Node, ...]

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        for n in self.items:  # noqa: SIM110 - a loop is cheaper than all(...) on the hot path
            if not n.holds(j, now, members):
                return False
        return True

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        return all(n.holds_over(history, ctx, now, members) for n in self.items)

    def children(self) -> Sequence[Node]:
        return self.items


@dataclass(frozen=True, slots=True, eq=False)
class AnyOf(Node):
    items: tuple[Node, ...]

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        for n in self.items:  # noqa: SIM110 - a loop is cheaper than any(...) on the hot path
            if n.holds(j, now, members):
                return True
        return False

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        return any(n.holds_over(history, ctx, now, members) for n in self.items)

    def children(self) -> Sequence[Node]:
        return self.items


@dataclass(frozen=True, slots=True, eq=False)
class Not(Node):
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


def _metric_reader(name: str) -> Callable[[Journey, int], int | None]:
    """A metric's value now; None: no value (time on page before any page)."""
    if name == "events":
        return lambda j, now: sum(j.counts.values())
    if name in _COUNTED:
        etype = _COUNTED[name]
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
        elif name in _COUNTED:
            value = sum(1 for ev in history if ev.type == _COUNTED[name])
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


SCORE_FIELDS: Final = {name: i for i, name in enumerate(SCORE_NAMES)}
_COMPARE: Final[dict[str, Callable[[float, float], bool]]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


@dataclass(frozen=True, slots=True, eq=False)
class Score(Node):
    """An outcome's score in this visit: probability, the visit's maximum probability, the
    quantile among recent visits, the maximum quantile — each tested by a predicate. A visit
    not scored (yet) matches none."""

    outcome: str
    tests: tuple[tuple[int, Predicate], ...]
    types: frozenset[str] | None = None
    # The tests as (field, comparison, bound): scores are floats, compared without the
    # predicates' coercion of any value (the hot path of score-triggered action maps).
    _floats: tuple[tuple[int, Callable[[float, float], bool], float, Predicate], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        floats = tuple((i, _COMPARE[t.op], float(t.operand), t) for i, t in self.tests)
        object.__setattr__(self, "_floats", floats)

    def _check(self, scores: Scores | None) -> bool:
        if scores is None:
            return False
        values = astuple(scores)  # in SCORE_FIELDS order
        for i, cmp, bound, test in self._floats:
            v = values[i]
            if type(v) is float:
                if not (cmp(v, bound) and math.isfinite(v)):
                    return False
            elif not test._test(v):  # not a float: the predicate decides
                return False
        return True

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        return self._check(j.scores.get(self.outcome))

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        return self._check(ctx.scores.get(self.outcome))


@dataclass(frozen=True, slots=True, eq=False)
class InSegment(Node):
    segment: str

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        return members.get(self.segment, False)

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        return members.get(self.segment, False)


# ---- parsing ---------------------------------------------------------------------------

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


def _content_key(raw: Any) -> str:
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _only(raw: dict[str, Any], path: list[str | int], allowed: Sequence[str]) -> None:
    for k in raw:
        if k not in allowed:
            raise ConditionError([*path, k], f"unknown field; here one of {', '.join(allowed)}")


def _count_arg(raw: dict[str, Any], name: str, path: list[str | int]) -> int | None:
    if name not in raw:
        return None
    n = raw[name]
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_COUNT:
        raise ConditionError([*path, name], f"a whole number from 0 to {MAX_COUNT} is expected")
    return n


def parse_condition(raw: Any, path: Sequence[str | int] = ()) -> Node:
    """Parse and validate a condition tree; raise :class:`ConditionError` on the first problem.

    >>> c = parse_condition({"all": [{"attribute": "device", "equals": "Mobile"},
    ...                              {"event": {"type": "search", "query": "travel alert"}}]})
    >>> type(c).__name__, [type(n).__name__ for n in c.children()]
    ('All', ['Attribute', 'Count'])
    """
    return _parse(raw, list(path), 0)


def _parse(raw: Any, path: list[str | int], depth: int) -> Node:
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
    head = heads[0]
    at = [*path, head]
    value = raw[head]
    if head in ("all", "any"):
        _only(raw, path, (head,))
        if not isinstance(value, list) or not value:
            raise ConditionError(at, "a non-empty list of conditions is expected")
        items = tuple(_parse(c, [*at, i], depth + 1) for i, c in enumerate(value))
        node: Node = All(items) if head == "all" else AnyOf(items)
        return _summarise(node, items)
    if head == "not":
        _only(raw, path, ("not",))
        item = _parse(value, at, depth + 1)
        return _summarise(Not(item), (item,))
    if head == "attribute":
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
    if head == "metric":
        _only(raw, path, ("metric", "equals", *NUMBER_OPS))
        if not isinstance(value, str) or value not in METRICS:
            raise ConditionError(at, f"unknown metric {value!r}; one of {', '.join(METRICS)}")
        ops = {k: v for k, v in raw.items() if k != "metric"}
        if value in _DURATION_METRICS:
            ops = {k: parse_duration(v, [*path, k]) for k, v in ops.items()}
        test = parse_predicate(ops, path, allowed=("equals", *NUMBER_OPS))
        mtypes, timed = METRICS[value]
        return Metric(value, test, mtypes, timed)
    if head == "returning":
        _only(raw, path, ("returning",))
        if not isinstance(value, bool):
            raise ConditionError(at, "must be true or false")
        op = "gt" if value else "lte"
        return Metric("visitNumber", Predicate(op, 1), frozenset(), False)
    if head in ("event", "searched"):
        _only(raw, path, (head, "atLeast", "atMost", "within"))
        if head == "event":
            flt = parse_filter(value, at)
        else:
            terms = _as_list(value)
            if not terms or not all(isinstance(t, str) and t.strip() for t in terms):
                raise ConditionError(at, "a search term or a list of them is expected")
            flt = EventFilter(types=frozenset({"search"}), query=Predicate("contains", terms))
        at_least = _count_arg(raw, "atLeast", path)
        at_most = _count_arg(raw, "atMost", path)
        if at_least is None:
            at_least = 0 if at_most is not None else 1
        if at_most is not None and at_most < at_least:
            raise ConditionError([*path, "atMost"], "atMost is below atLeast: never true")
        within = parse_duration(raw["within"], [*path, "within"]) if "within" in raw else None
        return Count(
            flt,
            at_least,
            at_most,
            within,
            key="c" + _content_key(raw),
            types=flt.types,
            timed=within is not None,
        )
    if head == "sequence":
        _only(raw, path, ("sequence", "within"))
        if not isinstance(value, list) or len(value) < 2:
            raise ConditionError(at, "a list of at least two event filters is expected")
        steps = tuple(parse_filter(s, [*at, i]) for i, s in enumerate(value))
        within = parse_duration(raw["within"], [*path, "within"]) if "within" in raw else None
        stypes: frozenset[str] | None = frozenset()
        for s in steps:
            stypes = None if s.types is None or stypes is None else stypes | s.types
        return Sequence_(steps, within, key="q" + _content_key(raw), types=stypes)
    if head == "sum":
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
    if head == "score":
        sugar = ("maxQuantileAbove", "quantileBelow")
        _only(raw, path, ("score", *SCORE_FIELDS, *sugar))
        if not isinstance(value, str) or not value:
            raise ConditionError(at, "the name of a scored outcome is expected")
        tests: list[tuple[int, Predicate]] = []
        for fname, idx in SCORE_FIELDS.items():
            if fname in raw:
                pred = parse_predicate(
                    raw[fname], [*path, fname], default_op="gte", allowed=NUMBER_OPS
                )
                tests.append((idx, pred))
        # "Was on track, is now falling off it": the visit's max quantile was above X and
        # the current quantile is below Y.
        for fname, idx, op in (("maxQuantileAbove", 3, "gt"), ("quantileBelow", 2, "lt")):
            if fname in raw:
                bound = raw[fname]
                if (
                    isinstance(bound, bool)
                    or not isinstance(bound, int | float)
                    or not (0 <= bound <= 1)
                ):
                    raise ConditionError([*path, fname], "a number from 0 to 1 is expected")
                tests.append((idx, Predicate(op, bound)))
        if not tests:
            raise ConditionError(
                path, f"a test is needed: one of {', '.join((*SCORE_FIELDS, *sugar))}"
            )
        return Score(value, tuple(tests))
    # segment
    _only(raw, path, ("segment",))
    if not isinstance(value, str) or not value:
        raise ConditionError(at, "a segment name is expected")
    return InSegment(value)


def _summarise(node: Node, items: Sequence[Node]) -> Node:
    types: frozenset[str] | None = frozenset()
    for n in items:
        types = None if n.types is None or types is None else types | n.types
    object.__setattr__(node, "types", types)
    object.__setattr__(node, "timed", any(n.timed for n in items))
    return node


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
