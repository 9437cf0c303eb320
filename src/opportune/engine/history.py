"""A visitor's live state rebuilt from the database: on a miss of the live store, and a
visit's journey replayed when the rules changed under it.

Reads only; the group-commit writer is the one that writes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import Engine, select

from opportune.core.journey import Journey
from opportune.core.session import SessionTrack
from opportune.engine.live import VisitorLive
from opportune.engine.rules import RuleBook
from opportune.engine.scoring import OutcomeScorer
from opportune.store.facts import (
    active_assignments as assignments_in_force,
)
from opportune.store.facts import (
    past_outcomes,
    recorded_state,
    session_facts,
    session_history,
)
from opportune.store.schema import events, sessions


class _VisitorRow(NamedTuple):
    site_id: str
    customer_id: str | None
    first_seen_at: int
    version: int


class StoredHistory:
    """Rebuilds live state from stored visits under the rules in force.

    >>> from sqlalchemy import create_engine
    >>> from opportune.workspace import Workspace
    >>> h = StoredHistory(create_engine("sqlite://"), RuleBook(Workspace()), OutcomeScorer(),
    ...                   horizon_ms=3_600_000)
    >>> h.track_of([])
    SessionTrack(number=0, session_id=None, started_at=0, last_at=0, previous_id=None, \
previous_started_at=0, previous_last_at=0)
    """

    def __init__(
        self, engine: Engine, rules: RuleBook, scorer: OutcomeScorer, *, horizon_ms: int
    ) -> None:
        """``horizon_ms``: how far back event ids are kept for de-duplication."""
        self.engine = engine
        self.rules = rules
        self.scorer = scorer
        self._horizon_ms = horizon_ms
        ph = "?" if engine.dialect.name == "sqlite" else "%s"
        self._visitor_sql = (
            f"SELECT site_id, customer_id, first_seen_at, version FROM visitors WHERE id = {ph}"
        )

    def load_visitor(self, visitor_id: str, now_ms: int) -> VisitorLive | None:
        """Rebuild a visitor's live state from the database (None: never seen)."""
        with self.engine.connect() as conn:
            # The version first: what is read after it may include later commits, which
            # only makes the write refused and the batch judged again — never the reverse.
            row = self._visitor(conn, visitor_id)
            if row is None:
                return None
            recent = conn.execute(
                select(
                    sessions.c.id,
                    sessions.c.number,
                    sessions.c.started_at,
                    sessions.c.last_event_at,
                )
                .where(sessions.c.visitor_id == visitor_id)
                .order_by(sessions.c.number.desc())
                .limit(2)
            ).all()
            ids = conn.execute(
                select(events.c.event_id, events.c.ts).where(
                    events.c.visitor_id == visitor_id, events.c.ts >= now_ms - self._horizon_ms
                )
            ).all()
            assignments = assignments_in_force(
                conn, visitor_id=visitor_id, customer_id=row.customer_id, now_ms=now_ms
            )
            past = past_outcomes(conn, visitor_id, recent[0].started_at) if recent else {}
            journey = (
                self.replay(
                    conn,
                    recent[0].id,
                    assignments,
                    past,
                    recent[1].last_event_at if len(recent) > 1 else 0,
                )
                if recent
                else None
            )
        return VisitorLive(
            site_id=row.site_id,
            customer_id=row.customer_id,
            first_seen_at=row.first_seen_at,
            track=self.track_of(recent),
            recent_ids={r.event_id: r.ts for r in ids},
            journey=journey,
            assignments=assignments,
            past_outcomes=past,
            version=row.version,
        )

    def stored_of(
        self, site_id: str, ids_by_visitor: dict[str, list[str]]
    ) -> tuple[set[str], dict[str, set[str]]]:
        """Of these visitors (each with event ids): those stored, and of theirs the event
        ids already stored. An import asks once per window, not once per visitor."""
        ph = "?" if self.engine.dialect.name == "sqlite" else "%s"
        visitors = list(ids_by_visitor)
        known: set[str] = set()
        stored: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            cur = conn.connection.dbapi_connection.cursor()
            try:
                for start in range(0, len(visitors), 500):
                    part = visitors[start : start + 500]
                    marks = ", ".join([ph] * len(part))
                    cur.execute(f"SELECT id FROM visitors WHERE id IN ({marks})", part)
                    known.update(r[0] for r in cur.fetchall())
                for vid in known:
                    ids = ids_by_visitor[vid]
                    for start in range(0, len(ids), 500):
                        part = ids[start : start + 500]
                        marks = ", ".join([ph] * len(part))
                        cur.execute(
                            "SELECT event_id FROM event_ids WHERE site_id = "
                            f"{ph} AND visitor_id = {ph} AND event_id IN ({marks})",
                            [site_id, vid, *part],
                        )
                        stored.setdefault(vid, set()).update(r[0] for r in cur.fetchall())
            finally:
                cur.close()
        return known, stored

    def _visitor(self, conn: Any, visitor_id: str) -> _VisitorRow | None:
        # Most misses are new visitors: answer those with one driver-level lookup.
        cur = conn.connection.dbapi_connection.cursor()
        try:
            cur.execute(self._visitor_sql, (visitor_id,))
            row = cur.fetchone()
        finally:
            cur.close()
        return None if row is None else _VisitorRow(*row)

    @staticmethod
    def track_of(recent: list[Any]) -> SessionTrack:
        """The session track of the visitor's last two visits (newest first)."""
        track = SessionTrack()
        if recent:
            cur = recent[0]
            track.number, track.session_id = cur.number, cur.id
            track.started_at, track.last_at = cur.started_at, cur.last_event_at
            if len(recent) > 1:
                prev = recent[1]
                track.previous_id = prev.id
                track.previous_started_at = prev.started_at
                track.previous_last_at = prev.last_event_at
        return track

    def replay(
        self,
        conn: Any,
        session_id: str,
        assignments: dict[str, list[int]],
        past: dict[str, int],
        previous_visit_at: int,
    ) -> Journey | None:
        """The visit's journey rebuilt from its stored events under the rules in force, with
        the segments and outcomes as recorded: the next event evaluates every rule and
        records only the differences (so a new or changed rule applies at once)."""
        found = session_history(conn, session_id)
        if found is None:
            return None
        srow, history, traits = found
        rs = self.rules.ruleset
        j = Journey(
            session_id=session_id,
            started_at=srow.started_at,
            facts=session_facts(srow._mapping),
            visit_number=srow.number,
            traits=traits,
            previous_visit_at=previous_visit_at,
            past_outcomes=dict(past),
            rules=rs.fingerprint,
        )
        if srow.customer_id:
            j.facts["identified"] = True
        scratch = {k: list(v) for k, v in assignments.items()}
        scorer = self.scorer if len(self.scorer) else None
        for ev in history:
            rs.step(j, ev, max(j.last_at, ev.ts), scratch, scorer)
        j.segments, j.outcomes = recorded_state(conn, session_id)
        j.full = True
        return j

    def rebuild_journey(self, state: VisitorLive) -> Journey | None:
        """The current visit's journey from the database (rules changed, or none held)."""
        sid = state.track.session_id
        if sid is None:
            return None
        with self.engine.connect() as conn:
            return self.replay(
                conn, sid, state.assignments, state.past_outcomes, state.track.previous_last_at
            )

    def assignments_of(
        self, visitor_id: str, customer_id: str | None, now_ms: int
    ) -> dict[str, list[int]]:
        """Customer-scope segments in force for the visitor and its customer's devices."""
        with self.engine.connect() as conn:
            return assignments_in_force(
                conn, visitor_id=visitor_id, customer_id=customer_id, now_ms=now_ms
            )
