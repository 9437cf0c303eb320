"""Outcomes: the goals of a site (a purchase, a loan application), achieved at most once
per visit when their condition first holds, optionally worth a value taken from the
attribute ``value_from`` of the event that achieved them (an order's amount).

>>> from opportune.core.conditions import parse_condition
>>> applied = parse_condition({"event": {"type": "form_submitted", "name": "apply"}})
>>> Outcome("applied", applied, value_from="amount").value_from
'amount'
"""

from __future__ import annotations

from dataclasses import dataclass

from opportune.core.conditions import Node


@dataclass(frozen=True, slots=True)
class Outcome:
    """A site's goal: its condition, and the event attribute its value is read from."""

    name: str
    condition: Node
    value_from: str | None = None
