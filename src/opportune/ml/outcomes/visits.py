"""Past visits as training sees them: what the live pipeline knew when each visit began.

A :class:`Visit` holds exactly what :mod:`opportune.engine.ingest` puts into a new
:class:`~opportune.core.journey.Journey` (session facts, visit number, end of the previous
visit, outcomes of earlier visits, customer-scope assignments in force) and the visit's
events on the server clock, in the order the pipeline processed them. Training takes its
visits from a :class:`VisitHistory`: the database's (``store/visits.py``, in production) or
the web simulator's (``sim/web_history.py``, for the bench), each following the engine's
rules so that replaying a visit reproduces the live state event by event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opportune.core.journey import Journey, JourneyEvent, Scalar


@dataclass(slots=True)
class Visit:
    """One past visit, as the pipeline saw it begin, and its events in processing order."""

    session_id: str
    visitor_id: str
    started_at: int
    visit_number: int
    facts: dict[str, Scalar]
    previous_visit_at: int
    past_outcomes: dict[str, int]
    assignments: dict[str, list[int]]  # customer-scope segment -> [since, expires at]
    events: list[JourneyEvent]
    # (event index, assignments): merged in before that event is processed — the visitor
    # was identified in this visit and its customer's other devices' assignments join.
    merges: list[tuple[int, dict[str, list[int]]]] = field(default_factory=list)
    email: str | None = None  # simulator only: the customer's email once identified

    def journey(self, rules_fingerprint: str) -> Journey:
        """A fresh journey for this visit, built as the engine builds one.

        >>> v = Visit("s1", "v1", 1_000, 2, {"device": "mobile"}, 500, {}, {}, [])
        >>> j = v.journey("rules-1")
        >>> j.session_id, j.visit_number, j.facts
        ('s1', 2, {'device': 'mobile'})
        """
        return Journey(
            session_id=self.session_id,
            started_at=self.started_at,
            facts=dict(self.facts),
            visit_number=self.visit_number,
            previous_visit_at=self.previous_visit_at,
            past_outcomes=dict(self.past_outcomes),
            rules=rules_fingerprint,
        )


@dataclass(frozen=True, slots=True)
class HistoryCounts:
    """How much finished history a window holds: visits, and achievements per outcome."""

    sessions: int
    achievements: dict[str, int]
    first_at: int | None
    last_at: int | None


# What carries a visitor's live state into its next visit: hears, after each replayed
# visit, the outcomes it achieved and the assignments after it.
Settle = Callable[[Visit, Sequence[str], dict[str, list[int]]], None]
# A worker's visits (and what carries state between them), given (worker, workers).
VisitSource = Callable[[int, int], tuple[Iterable[Visit], Settle | None]]


class VisitHistory(Protocol):
    """Finished visits of a window, to count (readiness) and to replay (training)."""

    def counts(self, *, since_ms: int, until_ms: int) -> HistoryCounts:
        """Visits started at or after ``since_ms`` and ended before ``until_ms``, and the
        outcomes they achieved."""
        ...

    def visit_count(self, *, since_ms: int, until_ms: int, site_id: str | None = None) -> int:
        """How many visits :meth:`source` yields at most (for progress bars)."""
        ...

    def source(self, *, since_ms: int, until_ms: int, site_id: str | None = None) -> VisitSource:
        """The window's visits, oldest first, split among workers."""
        ...
