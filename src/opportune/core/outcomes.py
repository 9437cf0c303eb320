"""Outcomes: the goals of a site (a purchase, a loan application), achieved at most once
per visit when their condition first holds, optionally worth a value taken from the
attribute ``value_from`` of the event that achieved them (an order's amount)."""

from __future__ import annotations

from dataclasses import dataclass

from opportune.core.conditions import Node


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    condition: Node
    value_from: str | None = None
