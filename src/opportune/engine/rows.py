"""The rows one batch gives the group-commit writer, gathered as its events are taken:
session rows, event tuples, identify operations, and the facts the rules changed.

The rows are ``store.writer``'s records (named tuples in column order): the bulk insert
takes them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from opportune.core.events import Event, Refusal
from opportune.core.rules import Changes
from opportune.engine.engagement import Outcome
from opportune.engine.identify import Linked
from opportune.engine.live import VisitorLive
from opportune.store.verdicts import AlreadyStored, Rejudge, Unstorable
from opportune.store.writer import (
    AchievementRow,
    EventRow,
    IdentifyOp,
    SegmentChangeRow,
    WriteJob,
)
from opportune.workspace import Site

_ENCODE = msgspec.json.Encoder()


@dataclass(slots=True)
class BatchRows:
    """What one batch has produced so far: its refusals and the rows for the writer.

    >>> job = BatchRows().job({"id": "v"}, engaged=None)
    >>> job.visitor, job.events
    ({'id': 'v'}, [])
    """

    refused: list[Refusal] = field(default_factory=list)
    duplicates: int = 0
    # Ids taken in this batch (the live state learns them only after the commit).
    ids: set[str] = field(default_factory=set)
    session_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    event_rows: list[EventRow] = field(default_factory=list)
    identifies: list[IdentifyOp] = field(default_factory=list)
    segment_changes: list[SegmentChangeRow] = field(default_factory=list)
    achievements: list[AchievementRow] = field(default_factory=list)
    # Known customers the batch's identify events link to, by event index (read ahead).
    linked: dict[int, Linked] = field(default_factory=dict)
    last_sid: str | None = None

    def add_changes(
        self,
        changes: Changes,
        *,
        site_id: str,
        session_id: str,
        visitor_id: str,
        customer_id: str | None,
        at: int,
        event_id: str,
    ) -> None:
        """The segment changes and outcome achievements of one rules step."""
        sid, vid, cid, rows = session_id, visitor_id, customer_id, self.segment_changes
        for name, t in changes.entered:
            rows.append(SegmentChangeRow(site_id, name, "entered", t, None, sid, vid, cid))
        for name, t in changes.left:
            rows.append(SegmentChangeRow(site_id, name, "left", t, None, sid, vid, cid))
        for name, _since, expires in changes.assigned:
            rows.append(SegmentChangeRow(site_id, name, "assigned", at, expires, sid, vid, cid))
        for name, t, value in changes.achieved:
            self.achievements.append(
                AchievementRow(sid, name, site_id, vid, cid, t, value, event_id)
            )

    def add_event(
        self,
        ev: Event,
        *,
        site: Site,
        visitor_id: str,
        index: int,
        ts: int,
        session_id: str,
        now_ms: int,
    ) -> None:
        """The event's row, and its identify operation if it is one."""
        data: dict[str, Any] | None = dict(ev.attributes) if ev.attributes else None
        if ev.type == "identify":
            self.identifies.append(
                IdentifyOp(
                    site.name,
                    visitor_id,
                    index,
                    ev.identity,
                    dict(ev.traits),
                    now_ms,
                    site.default_phone_region,
                )
            )
            # Identifiers live only in the customer tables; the event keeps the traits'
            # keys so the journey shows that an identify happened, without personal data.
            data = {"traitKeys": sorted(ev.traits)} if ev.traits else None
        self.event_rows.append(
            EventRow(
                visitor_id,
                ts,
                ev.id,
                site.name,
                session_id,
                now_ms,
                index,
                ev.type,
                ev.url,
                ev.name,
                ev.query,
                ev.title,
                ev.referrer,
                _ENCODE.encode(data).decode() if data else None,
            )
        )

    @staticmethod
    def visitor_row(visitor_id: str, site_id: str, state: VisitorLive) -> dict[str, Any]:
        """The visitor's upsert row as its live state stands."""
        return {
            "id": visitor_id,
            "site_id": site_id,
            "customer_id": state.customer_id,
            "first_seen_at": state.first_seen_at,
            "last_visit_at": state.track.started_at,
            "session_count": state.track.number,
        }

    def job(self, visitor: dict[str, Any], *, engaged: Outcome | None) -> WriteJob:
        """The writer's job. The visitor row goes with every job: its upsert is the
        compare-and-set of the visitor's version (and changes the row only when a visit
        starts)."""
        return WriteJob(
            visitor=visitor,
            sessions=list(self.session_rows.values()),
            events=self.event_rows,
            identifies=self.identifies,
            segment_changes=self.segment_changes,
            achievements=self.achievements,
            action_events=engaged.action_rows if engaged else [],
            webhooks=engaged.webhook_rows if engaged else [],
        )


# Judgements of one batch: the first, and again after the database disagreed (another
# writer came first, events already stored, events refused); past that the batch fails
# (503: the client retries later).
ATTEMPTS = 4


@dataclass(slots=True)
class Verdict:
    """What the database said of a batch's earlier attempts: ids it holds (committed),
    events it refuses (index -> reason).

    >>> v = Verdict()
    >>> v.learn(AlreadyStored({"e1"})), v.stored
    (True, {'e1'})
    """

    stored: set[str] = field(default_factory=set)
    refused: dict[int, str] = field(default_factory=dict)
    attempts: int = 1

    def learn(self, exc: Rejudge) -> bool:
        """Take in what the database said; False once the batch has had its attempts."""
        if isinstance(exc, AlreadyStored):
            self.stored |= exc.ids
        elif isinstance(exc, Unstorable):
            self.refused.update(exc.refusals)
        self.attempts += 1
        return self.attempts <= ATTEMPTS
