"""Event filters: which events a journey pattern counts.

>>> flt = parse_filter({"type": "search", "query": "alert"}, [])
>>> sorted(flt.types or ()), flt.query.op if flt.query else None
(['search'], 'contains')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from opportune.core.conditions.errors import ConditionError
from opportune.core.conditions.predicates import Predicate, as_list, parse_predicate
from opportune.core.conditions.vocabulary import EVENT_TYPES
from opportune.core.journey import JourneyEvent


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
        given = as_list(raw["type"])
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
