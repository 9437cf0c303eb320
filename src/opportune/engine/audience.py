"""Audience estimates: how many visits of the last N days a segment or an outcome would have
matched, by replaying stored visits through the same rules the live pipeline runs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from opportune.core.journey import Journey
from opportune.core.rules import Ruleset
from opportune.store.facts import sessions_since

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Estimate:
    kind: str
    name: str
    days: int
    sessions: int  # visits replayed
    matched: int  # of those, how many entered the segment / achieved the outcome
    truncated: bool  # more visits than ``limit`` in the window: the newest were replayed

    @property
    def share(self) -> float:
        """The matched share of the visits replayed.

        >>> Estimate("segment", "s", 7, sessions=40, matched=10, truncated=False).share
        0.25
        """
        return self.matched / self.sessions if self.sessions else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "name": self.name,
            "days": self.days,
            "sessions": self.sessions,
            "matched": self.matched,
            "share": round(self.share, 6),
            "truncated": self.truncated,
        }


def estimate(
    engine: Engine,
    ruleset: Ruleset,
    *,
    kind: str,
    name: str,
    days: int,
    now_ms: int,
    limit: int = 50_000,
    site_id: str | None = None,
) -> Estimate:
    """Replay the visits started in the last ``days`` (newest first, at most ``limit``).

    A visit matches a segment if it was in it at any moment of the visit, and an outcome
    if it achieved it. Customer-scope assignments from earlier visits are not carried
    between replayed visits: each visit is judged on its own events.
    """
    sessions = matched = 0
    with engine.connect() as conn:
        for ctx, history in sessions_since(
            conn, now_ms - days * DAY_MS, site_id=site_id, limit=limit + 1
        ):
            if sessions == limit:
                return Estimate(kind, name, days, sessions, matched, True)
            sessions += 1
            j = Journey(
                session_id="replay",
                started_at=ctx.started_at,
                facts=dict(ctx.facts),
                visit_number=ctx.visit_number,
            )
            assignments: dict[str, list[int]] = {}
            for ev in history:
                changes = ruleset.step(j, ev, max(j.last_at, ev.ts), assignments)
                hit = (
                    any(n == name for n, _ in changes.entered)
                    or any(n == name for n, _, _ in changes.assigned)
                    if kind == "segment"
                    else any(n == name for n, _, _ in changes.achieved)
                )
                if hit:
                    matched += 1
                    break
    return Estimate(kind, name, days, sessions, matched, False)
