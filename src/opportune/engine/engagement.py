"""Engagement in the live pipeline: action-map decisions after each batch, what the widget is
sent, what it reports back, webhook calls queued in the same transaction, and the queues'
outlook that paces chat offers.

The decision itself is :func:`opportune.core.actionmaps.decide`; this module only gathers
its inputs (queue presence, caps, the visitor's engagement state) and turns its output
into rows and an answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import Engine, select

from opportune.core.action_types import OFFER_LIFETIME_MS, payload
from opportune.core.actionmaps import ActionMap, Decision, Engagement, Fired, PaceMemo, decide
from opportune.core.conditions import parse_duration
from opportune.core.journey import Journey
from opportune.core.pacing import PacingTarget, QueueOutlook
from opportune.engine import metrics
from opportune.store.schema import customer_identifiers, queue_presence
from opportune.workspace.engagement import EngagementSettings, QueueDoc

log = logging.getLogger(__name__)
_TEMPLATES = SandboxedEnvironment(autoescape=False)


@dataclass(slots=True)
class Presence:
    agents_available: int = 0
    busy_slots: int = 0
    waiting: int = 0
    updated_at: int = 0


@dataclass(slots=True)
class QueueBoard:
    """What pacing knows of each chat queue: its configuration, agents present (set over
    the admin API, shared through the database), offers pending on pages in this process."""

    queues: Mapping[str, QueueDoc]
    presence: dict[str, Presence] = field(default_factory=dict)
    pending: dict[str, dict[str, int]] = field(default_factory=dict)  # queue -> inst -> expires

    def refresh(self, engine: Engine) -> None:
        with engine.connect() as conn:
            rows = conn.execute(select(queue_presence)).all()
        self.presence = {
            r.queue: Presence(r.agents_available, r.busy_slots, r.waiting, r.updated_at)
            for r in rows
        }

    def outlooks(self, now: int) -> Mapping[str, QueueOutlook]:
        """Each queue's outlook now, built only when a decision asks for it (most batches
        offer no chat)."""
        return _Outlooks(self, now)

    def outlook(self, name: str, now: int) -> QueueOutlook | None:
        q = self.queues.get(name)
        if q is None:
            return None
        p = self.presence.get(name, Presence())
        pending = self.pending.get(name, {})
        for inst in [i for i, exp in pending.items() if exp <= now]:
            del pending[inst]
        return QueueOutlook(
            agents_available=p.agents_available,
            capacity_per_agent=q.capacity_per_agent,
            busy_slots=p.busy_slots,
            waiting=p.waiting,
            arrival_rate=q.arrival_rate_per_hour / 3600,
            handle_time_s=parse_duration(q.handle_time, []) / 1000,
            patience_s=parse_duration(q.patience, []) / 1000,
            pending_offers=len(pending),
            acceptance_rate=q.acceptance_rate,
        )

    def offered(self, queue: str, instance: str, expires: int) -> None:
        self.pending.setdefault(queue, {})[instance] = expires

    def answered(self, instance: str) -> None:
        for pending in self.pending.values():
            pending.pop(instance, None)


class _Outlooks(Mapping[str, QueueOutlook]):
    __slots__ = ("board", "now")

    def __init__(self, board: QueueBoard, now: int) -> None:
        self.board, self.now = board, now

    def __getitem__(self, name: str) -> QueueOutlook:
        o = self.board.outlook(name, self.now)
        if o is None:
            raise KeyError(name)
        return o

    def __iter__(self) -> Iterator[str]:
        return iter(self.board.queues)

    def __len__(self) -> int:
        return len(self.board.queues)


@dataclass(frozen=True, slots=True)
class Visit:
    """Whose decision it is: what every row of it carries."""

    site_id: str
    visitor_id: str
    customer_id: str | None
    session_id: str

    def action_row(
        self, m: str, instance: str, state: str, at: int, reason: str | None
    ) -> tuple[Any, ...]:
        """An ``action_events`` row (``ACTION_EVENT_COLUMNS`` order)."""
        detail = None
        return (
            self.site_id,
            m,
            instance,
            state,
            reason,
            at,
            self.session_id,
            self.visitor_id,
            self.customer_id,
            detail,
        )


@dataclass(frozen=True, slots=True)
class WebhookCall:
    """A webhook call for the outbox: the worker's payload with its body rendered."""

    instance: str
    map: str
    method: str
    url: str
    headers: Mapping[str, str]
    body: str  # JSON
    timeout_ms: int
    max_attempts: int

    def row(self, visit: Visit, now: int) -> tuple[Any, ...]:
        """A pending ``webhook_deliveries`` row (``WEBHOOK_COLUMNS`` order)."""
        return (
            self.instance,
            visit.site_id,
            self.map,
            visit.session_id,
            visit.visitor_id,
            self.method,
            self.url,
            json.dumps(self.headers),
            self.body,
            self.timeout_ms,
            self.max_attempts,
            0,  # attempts
            "pending",
            now,  # next_at
            0,  # claimed_until
            None,  # last_error
            now,  # created_at
            None,  # done_at
        )


@dataclass(slots=True)
class Outcome:
    """A batch's engagement: what to send, what to store (rows in the writer's order)."""

    decision: Decision
    action_rows: list[tuple[Any, ...]]
    webhook_rows: list[tuple[Any, ...]]


class Engager:
    """Runs the action maps for a visitor after a batch (or a recheck)."""

    def __init__(self, settings: EngagementSettings, queues: Mapping[str, QueueDoc]) -> None:
        self.caps = {ch: c.to_core() for ch, c in settings.caps.items()}
        self.pacing = PacingTarget(
            service_level=settings.pacing.service_level,
            answer_within_s=parse_duration(settings.pacing.answer_within, []) / 1000,
            short_abandon_s=parse_duration(settings.pacing.short_abandon, []) / 1000,
        )
        self.board = QueueBoard(queues)
        self.pace_memo = PaceMemo()

    def run(
        self,
        *,
        site_id: str,
        visitor_id: str,
        customer_id: str | None,
        journey: Journey,
        members: Mapping[str, int],
        engagement: Engagement,
        maps: list[ActionMap],
        assignments: Mapping[str, list[int]],
        now: int,
    ) -> Outcome:
        """Decide, then turn the decision into rows; chat offers count as pending."""
        decision = decide(
            visitor_id=visitor_id,
            journey=journey,
            members=members,
            engagement=engagement,
            maps=maps,
            now=now,
            caps=self.caps,
            outlooks=self.board.outlooks(now),
            pacing=self.pacing,
            assignments=assignments,
            pace_memo=self.pace_memo,
        )
        metrics.decided((r.map, r.state) for r in decision.records)
        visit = Visit(site_id, visitor_id, customer_id, journey.session_id)
        rows = [
            visit.action_row(r.map, r.instance, r.state, r.at, r.reason or None)
            for r in decision.records
        ]
        hooks = []
        for fired in decision.webhooks:
            context = webhook_context(visit, journey, members, fired.map.name, now)
            try:
                call = webhook_call(fired, context)
            except Exception as exc:  # a broken template fails this call alone, recorded
                reason = f"template: {exc}"[:255]
                rows.append(
                    visit.action_row(fired.map.name, fired.instance, "errored", now, reason)
                )
                continue
            hooks.append(call.row(visit, now))
        self._pending(decision, now)
        return Outcome(decision, rows, hooks)

    def _pending(self, decision: Decision, now: int) -> None:
        """Chat offers on pages count against their queue's outlook until answered."""
        for fired in decision.offers:
            m = fired.map
            if m.channel == "chat" and m.queue:
                lifetime = int(m.action.get("timeoutMs", OFFER_LIFETIME_MS))
                self.board.offered(m.queue, fired.instance, now + lifetime)


def webhook_context(
    visit: Visit, journey: Journey, members: Mapping[str, int], map_name: str, now: int
) -> dict[str, Any]:
    """What a webhook body's placeholders may read (docs/actions.md)."""
    return {
        "visitor": {"id": visit.visitor_id},
        "customer": {"id": visit.customer_id, "traits": dict(journey.traits)},
        "session": {"id": visit.session_id, "url": journey.url, "facts": dict(journey.facts)},
        "segments": sorted(members),
        "outcomes": sorted(journey.outcomes),
        "scores": {
            name: {"probability": s.probability, "quantile": s.quantile}
            for name, s in journey.scores.items()
        },
        "map": map_name,
        "now": now,
    }


def webhook_call(fired: Fired, context: Mapping[str, Any]) -> WebhookCall:
    """The call to queue for a fired webhook map: its body rendered (raises if it cannot be)."""
    spec = payload(fired.instance, fired.map, "", {})
    return WebhookCall(
        instance=fired.instance,
        map=fired.map.name,
        method=spec["method"],
        url=spec["url"],
        headers=spec["headers"],
        body=json.dumps(render(spec["body"], context)),
        timeout_ms=spec["timeoutMs"],
        max_attempts=spec["attempts"],
    )


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """A JSON body with ``{{ ... }}`` placeholders in its strings, rendered in a sandbox.

    A string that is one placeholder keeps the value's type (a list stays a list).

    >>> render({"id": "{{ visitor.id }}", "hi": "Hi {{ visitor.id }}"}, {"visitor": {"id": 7}})
    {'id': 7, 'hi': 'Hi 7'}
    """
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if isinstance(value, str) and "{{" in value:
        text = value.strip()
        if text.startswith("{{") and text.endswith("}}") and text.count("{{") == 1:
            expr = _TEMPLATES.compile_expression(text[2:-2].strip(), undefined_to_none=True)
            return expr(**context)
        return _TEMPLATES.from_string(value).render(**context)
    return value


def prefill_sources(engine: Engine, journey: Journey, customer_id: str | None) -> dict[str, Any]:
    """What a registration form may be prefilled with: traits, session facts, and the
    customer's identifiers (read when an offer with a form is made, which is rare)."""
    out: dict[str, Any] = {f"traits.{k}": v for k, v in journey.traits.items()}
    out.update({f"attributes.{k}": v for k, v in journey.attributes.items()})
    if customer_id:
        with engine.connect() as conn:
            for kind, value in conn.execute(
                select(customer_identifiers.c.kind, customer_identifiers.c.value).where(
                    customer_identifiers.c.customer_id == customer_id
                )
            ):
                out.setdefault(f"identifier.{kind}", value)
    return out


def locale_of(journey: Journey) -> str:
    loc = str(journey.facts.get("locale") or "en").lower()
    return "es" if loc.startswith("es") else "en"
