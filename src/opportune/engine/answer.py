"""The answer to a batch, a recheck or a report: what the snippet and the widget read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opportune.core.events import Refusal


@dataclass(slots=True)
class IngestResult:
    """What a batch's sender learns: what was accepted, and the visitor as the rules see it.

    >>> IngestResult(1, 0, [], "v", "s", None, 1).to_json()["visitorId"]
    'v'
    """

    accepted: int
    duplicates: int
    refused: list[Refusal]
    visitor_id: str
    session_id: str | None
    customer_id: str | None
    visit_number: int
    segments: list[str] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    recheck_in_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "refused": [{"index": r.index, "id": r.id, "reason": r.reason} for r in self.refused],
            "visitorId": self.visitor_id,
            "sessionId": self.session_id,
            "customerId": self.customer_id,
            "visitNumber": self.visit_number,
            "segments": self.segments,
            "outcomes": self.outcomes,
            **({"scores": self.scores} if self.scores else {}),
            **({"actions": self.actions} if self.actions else {}),
            **({"recheckInMs": self.recheck_in_ms} if self.recheck_in_ms else {}),
            **self.extra,
        }
