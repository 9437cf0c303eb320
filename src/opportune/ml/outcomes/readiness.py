"""When an outcome may be scored: only once its history is large enough to learn from.

A model trained on a few dozen visits would rank at random and be calibrated to noise, and
every score it gave would still look precise. So an outcome is trained only when the
window holds at least ``min_sessions`` finished visits and ``min_achievements`` visits that
achieved it (``scoring`` in the outcome's document; 1,000 and 50 by default). Pure: the
counts come from the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from opportune.workspace.documents import ScoringDoc


@dataclass(frozen=True, slots=True)
class Readiness:
    """An outcome's scoring state: enough history or not, and what is active."""

    outcome: str
    enabled: bool
    sessions: int
    min_sessions: int
    achievements: int
    min_achievements: int
    active_version: str | None = None

    @property
    def ready(self) -> bool:
        """Enough history to train (whether or not scoring is enabled)."""
        return self.sessions >= self.min_sessions and self.achievements >= self.min_achievements

    @property
    def status(self) -> str:
        """One line for the console and the CLI.

        >>> Readiness("quote", True, 420, 1000, 7, 50).status
        'collecting data: 420 of 1000 sessions, 7 of 50 achievements'
        >>> Readiness("quote", True, 5000, 1000, 70, 50).status
        'ready'
        >>> Readiness("quote", True, 5000, 1000, 70, 50, "v3").status
        'active model v3'
        """
        if self.active_version is not None:
            return f"active model {self.active_version}"
        if not self.enabled:
            return "scoring not enabled"
        if not self.ready:
            return (
                f"collecting data: {self.sessions} of {self.min_sessions} sessions, "
                f"{self.achievements} of {self.min_achievements} achievements"
            )
        return "ready"


def readiness(
    outcome: str,
    scoring: ScoringDoc,
    *,
    sessions: int,
    achievements: int,
    active_version: str | None = None,
) -> Readiness:
    """The readiness of ``outcome`` given its scoring settings and the history counts."""
    return Readiness(
        outcome,
        scoring.enabled,
        sessions,
        scoring.min_sessions,
        achievements,
        scoring.min_achievements,
        active_version,
    )
