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

from opportune.core.actionmaps import ActionMap, Decision, Engagement, PaceMemo, decide
from opportune.core.conditions import parse_duration
from opportune.core.journey import Journey
from opportune.core.pacing import PacingTarget, QueueOutlook
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


@dataclass(slots=True)
class Outcome:
    """A batch's engagement: what to send, what to store."""

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
        sid = journey.session_id
        rows = [
            (
                site_id,
                r.map,
                r.instance,
                r.state,
                r.reason or None,
                r.at,
                sid,
                visitor_id,
                customer_id,
                None,
            )
            for r in decision.records
        ]
        hooks = []
        for inst, m in decision.webhooks:
            hook = m.action.get("webhook", {})
            context = {
                "visitor": {"id": visitor_id},
                "customer": {"id": customer_id, "traits": dict(journey.traits)},
                "session": {"id": sid, "url": journey.url, "facts": dict(journey.facts)},
                "segments": sorted(members),
                "outcomes": sorted(journey.outcomes),
                "scores": {
                    name: {"probability": s.probability, "quantile": s.quantile}
                    for name, s in journey.scores.items()
                },
                "map": m.name,
                "now": now,
            }
            try:
                body = json.dumps(render(hook.get("body", {}), context))
            except Exception as exc:  # a broken template fails this call alone, recorded
                rows.append(
                    (
                        site_id,
                        m.name,
                        inst,
                        "errored",
                        f"template: {exc}"[:255],
                        now,
                        sid,
                        visitor_id,
                        customer_id,
                        None,
                    )
                )
                continue
            hooks.append(
                (
                    inst,
                    site_id,
                    m.name,
                    sid,
                    visitor_id,
                    hook.get("method", "POST"),
                    hook["url"],
                    json.dumps(hook.get("headers", {})),
                    body,
                    parse_duration(hook.get("timeout", "5s"), []),
                    1 + int(hook.get("retries", 4)),
                    0,
                    "pending",
                    now,
                    0,
                    None,
                    now,
                    None,
                )
            )
        for inst, m in decision.offers:
            if m.channel == "chat" and m.queue:
                self.board.offered(m.queue, inst, now + int(m.action.get("timeoutMs", 30_000)))
        return Outcome(decision, rows, hooks)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """A JSON body with ``{{ ... }}`` placeholders in its strings, rendered in a sandbox.

    A string that is one placeholder keeps the value's type (a list stays a list)."""
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


def payload(inst: str, m: ActionMap, locale: str, prefill: Mapping[str, Any]) -> dict[str, Any]:
    """What the widget gets for one offer (texts for the visitor's locale, form prefilled)."""
    act = dict(m.action)
    texts = act.pop("texts", {}).get(locale, {})
    out: dict[str, Any] = {
        "id": inst,
        "map": m.name,
        "type": m.channel,
        "locale": locale,
        "timeoutMs": act.pop("timeoutMs", 30_000),
    }
    if "content" in act:
        c = dict(act["content"])
        for key in ("title", "body", "imageAlt"):
            if key in texts:
                c[key] = texts[key]
        if "cta" in c and "ctaLabel" in texts:
            c["cta"] = {**c["cta"], "label": texts["ctaLabel"]}
        out["content"] = c
    if "chat" in act:
        chat = json.loads(json.dumps(act["chat"]))
        inv = chat["invitation"]
        for key in ("title", "body", "accept", "decline"):
            if key in texts:
                inv[key] = texts[key]
        form = chat.get("form")
        if form:
            for f in form.get("fields", []):
                source = f.pop("prefill", None)
                if source and prefill.get(source) is not None:
                    f["value"] = str(prefill[source])
        out["chat"] = chat
    if "bot" in act:
        bot = dict(act["bot"])
        for key in ("title", "greeting"):
            if key in texts:
                bot[key] = texts[key]
        out["bot"] = bot
    return out


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
