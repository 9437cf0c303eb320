"""Segments: named conditions over a visit's attributes and journey.

A *session* segment holds while its condition holds: entered when it becomes true, left
when it stops (a time window passing, say). A *customer* segment is an assignment: once
its condition holds in any visit, the visitor — and the customer, once identified, on
every device — stays in it for ``expires_after_days`` from the latest visit it matched.

>>> from opportune.core.conditions import parse_condition
>>> Segment("returning", parse_condition({"returning": True}), scope="customer").scope
'customer'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from opportune.core.conditions import Node

Scope = Literal["session", "customer"]


@dataclass(frozen=True, slots=True)
class Segment:
    """A named condition and how long membership lasts."""

    name: str
    condition: Node
    scope: Scope = "session"
    expires_after_days: int = 30
