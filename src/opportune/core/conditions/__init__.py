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

The package holds one module per noun: the vocabulary, errors, durations, predicates,
event filters, the node kinds (logic, attributes, metrics, journey patterns, scores), the
parser and the readings of a tree (``describe``, ``why_not``). This module is its interface.

>>> from opportune.core.journey import Journey
>>> c = parse_condition({"any": [{"attribute": "device", "equals": "mobile"}, {"returning": True}]})
>>> c.holds(Journey(session_id="s", started_at=0, facts={"device": "Mobile"}), 0, {})
True
"""

from __future__ import annotations

from opportune.core.conditions.attributes import Attribute
from opportune.core.conditions.durations import parse_duration
from opportune.core.conditions.errors import ConditionError, format_path
from opportune.core.conditions.filters import EventFilter, parse_filter
from opportune.core.conditions.logic import All, AnyOf, Group, InSegment, Not
from opportune.core.conditions.metrics import Metric
from opportune.core.conditions.nodes import Context, Members, Node
from opportune.core.conditions.parser import HEADS, parse_condition
from opportune.core.conditions.patterns import Count, Sequence_, Sum
from opportune.core.conditions.predicates import Predicate, _number, parse_predicate
from opportune.core.conditions.reading import (
    describe,
    may_change_with_time,
    references,
    scored_outcomes,
    stateful_nodes,
    why_not,
)
from opportune.core.conditions.scores import SCORE_FIELDS, Score
from opportune.core.conditions.vocabulary import (
    ALL_OPS,
    EVENT_TYPES,
    LIVE_ATTRIBUTES,
    MAX_COUNT,
    MAX_DEPTH,
    METRICS,
    NUMBER_OPS,
    SESSION_ATTRIBUTES,
    TEXT_OPS,
)

__all__ = [
    "ALL_OPS",
    "EVENT_TYPES",
    "HEADS",
    "LIVE_ATTRIBUTES",
    "MAX_COUNT",
    "MAX_DEPTH",
    "METRICS",
    "NUMBER_OPS",
    "SCORE_FIELDS",
    "SESSION_ATTRIBUTES",
    "TEXT_OPS",
    "All",
    "AnyOf",
    "Attribute",
    "ConditionError",
    "Context",
    "Count",
    "EventFilter",
    "Group",
    "InSegment",
    "Members",
    "Metric",
    "Node",
    "Not",
    "Predicate",
    "Score",
    "Sequence_",
    "Sum",
    "_number",  # the predicate tests' literal reference reads it
    "describe",
    "format_path",
    "may_change_with_time",
    "parse_condition",
    "parse_duration",
    "parse_filter",
    "parse_predicate",
    "references",
    "scored_outcomes",
    "stateful_nodes",
    "why_not",
]
