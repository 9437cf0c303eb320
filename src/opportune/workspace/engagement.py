"""Workspace documents for engagement: action maps, content templates, the workspace's
engagement settings (frequency caps per channel, pacing target), and chat queues as pacing
sees them until routing provides them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, field_validator, model_validator

from opportune.core.action_types import (
    ACTION_TYPES,
    OFFER_LIFETIME_MS,
    WEBHOOK_RETRIES,
    WEBHOOK_TIMEOUT_MS,
    Channel,
    Known,
    OnPageChannel,
    duration_text,
)
from opportune.core.actionmaps import ActionMap, Caps, Schedule
from opportune.core.conditions import ConditionError, Predicate, parse_condition, parse_duration
from opportune.core.kpis import KpiType
from opportune.workspace.documents import _NAME, Document

_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
_COLOUR = r"^#[0-9a-fA-F]{6}$"


def _ms(value: Any, field: str) -> int:
    try:
        return parse_duration(value, [field])
    except ConditionError as exc:
        raise ValueError(exc.message) from None


def _duration(v: str | int) -> str | int:
    _ms(v, "")
    return v


# "30s", "5m", "2h", "1d", "500ms", or a number of seconds.
Duration = Annotated[str | int, AfterValidator(_duration)]


class Style(Document):
    primary: str = Field(default="#0b5fff", pattern=_COLOUR)
    background: str = Field(default="#ffffff", pattern=_COLOUR)
    text: str = Field(default="#1a1a1a", pattern=_COLOUR)
    radius: str = Field(default="12px", pattern=r"^\d{1,2}px$")


class ContentTemplate(Document):
    """A reusable look for content offers: layout and styling."""

    kind: Literal["contentTemplate"] = "contentTemplate"
    name: str = Field(pattern=_NAME)
    layout: Literal["banner", "modal", "slide-in"] = "slide-in"
    style: Style = Field(default_factory=Style)


class Cta(Document):
    label: str = Field(min_length=1, max_length=60)
    url: str = Field(pattern=r"^(https?://|/)", max_length=2048)


class Content(Document):
    title: str = Field(min_length=1, max_length=120)
    body: str = Field(default="", max_length=1000)
    image_url: str | None = Field(default=None, pattern=r"^(https?://|/)", max_length=2048)
    image_alt: str = Field(default="", max_length=200)
    cta: Cta | None = None
    template: str | None = Field(default=None, pattern=_NAME)
    layout: Literal["banner", "modal", "slide-in"] | None = None


class FormField(Document):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
    label: str = Field(min_length=1, max_length=80)
    type: Literal["text", "email", "tel", "select", "textarea"] = "text"
    required: bool = False
    options: list[str] = Field(default_factory=list, max_length=50)
    # Prefill from what is known: a customer trait or session attribute, e.g. traits.firstName
    prefill: str | None = Field(default=None, max_length=64)


class ChatForm(Document):
    title: str = Field(default="", max_length=120)
    fields: list[FormField] = Field(default_factory=list, max_length=12)
    submit: str = Field(default="", max_length=40)


class Invitation(Document):
    title: str = Field(min_length=1, max_length=120)
    body: str = Field(default="", max_length=500)
    accept: str = Field(default="", max_length=40)
    decline: str = Field(default="", max_length=40)


class Chat(Document):
    queue: str = Field(pattern=_NAME)
    invitation: Invitation
    form: ChatForm | None = None
    bot: str | None = Field(default=None, pattern=_NAME)  # a bot flow answers first


class Bot(Document):
    flow: str = Field(pattern=_NAME)
    title: str = Field(min_length=1, max_length=120)
    greeting: str = Field(default="", max_length=500)


class Webhook(Document):
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    url: str = Field(pattern=r"^https?://", max_length=2048)
    # Header values may name a secret from the settings: "Bearer ${secret:CRM_TOKEN}".
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)
    # A JSON body with {{ ... }} placeholders (visitor, customer, segments, scores, map).
    body: dict[str, Any] = Field(default_factory=dict)
    timeout: Duration = duration_text(WEBHOOK_TIMEOUT_MS)
    retries: int = Field(default=WEBHOOK_RETRIES, ge=0, le=10)


# Each registered action type's document part, by channel (the contract suite checks that
# every type in core.action_types.ACTION_TYPES has one).
ACTION_DOCUMENTS: dict[str, type[Document]] = {
    "content": Content,
    "chat": Chat,
    "bot": Bot,
    "webhook": Webhook,
}


class Action(Document):
    """What a map does: one action type's document (``type`` names it, its part holds it).

    >>> act = Action.model_validate({"type": "bot", "bot": {"flow": "returns", "title": "Hi"}})
    >>> act.timeout, action_payload(act, {})["bot"]["flow"]
    ('30s', 'returns')
    """

    type: Channel
    timeout: Duration = duration_text(OFFER_LIFETIME_MS)  # an offer unanswered this long times out
    content: Content | None = None
    chat: Chat | None = None
    bot: Bot | None = None
    webhook: Webhook | None = None
    # Texts per locale: {"es": {"title": "...", "body": "...", ...}} over the defaults.
    texts: dict[Literal["en", "es"], dict[str, str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one(self) -> Action:
        given = [k for k in ACTION_DOCUMENTS if getattr(self, k) is not None]
        if given != [self.type]:
            raise ValueError(f"an action of type {self.type!r} needs exactly its {self.type!r}")
        return self


class Pages(Document):
    include: list[str] = Field(default_factory=list, max_length=50)
    exclude: list[str] = Field(default_factory=list, max_length=50)


class ScheduleDoc(Document):
    timezone: str = "UTC"
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: list(_DAYS)
    )
    hours: str = "00:00-24:00"
    start: date | None = None
    end: date | None = None
    closed: bool = False

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; e.g. Europe/Madrid") from None
        return v

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: str) -> str:
        m = _HOURS.match(v)
        if not m or (int(m[3]) == 24 and m[4] != "00"):
            raise ValueError("hours look like '08:30-20:00'")
        if int(m[1]) * 60 + int(m[2]) >= int(m[3]) * 60 + int(m[4]):
            raise ValueError("hours must end after they start")
        return v

    def to_core(self) -> Schedule:
        tz: tzinfo = ZoneInfo(self.timezone) if self.timezone != "UTC" else UTC
        m = _HOURS.match(self.hours)
        assert m is not None

        def at(d: date | None, t: time) -> int | None:
            return int(datetime.combine(d, t, tz).timestamp() * 1000) if d else None

        return Schedule(
            tz=tz,
            days=frozenset(_DAYS[d] for d in self.days),
            start_minute=int(m[1]) * 60 + int(m[2]),
            end_minute=int(m[3]) * 60 + int(m[4]),
            start_ms=at(self.start, time.min),
            end_ms=at(self.end, time.max),
            closed=self.closed,
        )


class CapsDoc(Document):
    min_wait: Duration = "10s"
    none_after_rejection: bool = True
    none_after_agent_chat: bool = True

    def to_core(self) -> Caps:
        return Caps(
            _ms(self.min_wait, "minWait"), self.none_after_rejection, self.none_after_agent_chat
        )


class Activation(Document):
    type: Literal["immediately", "delay", "nextPage", "nextVisit"] = "immediately"
    delay: Duration = 0


class ActionMapDoc(Document):
    """When to engage whom, and how (docs/actions.md)."""

    kind: Literal["actionMap"] = "actionMap"
    name: str = Field(pattern=_NAME)
    description: str = Field(default="", max_length=500)
    enabled: bool = True
    trigger: dict[str, Any]
    pages: Pages = Field(default_factory=Pages)
    activation: Activation = Field(default_factory=Activation)
    schedule: ScheduleDoc = Field(default_factory=ScheduleDoc)
    priority: int = Field(default=0, ge=0, le=1000)
    caps: CapsDoc | None = None
    holdout_percent: float = Field(default=0.0, ge=0, le=100)
    once_per_assignment_of: str | None = Field(default=None, pattern=_NAME)
    action: Action

    def to_core(self, templates: dict[str, ContentTemplate] | None = None) -> ActionMap:
        """The core map; ``ConditionError`` with a path under ``trigger`` if it is invalid."""
        trigger = parse_condition(self.trigger, ["trigger"])
        act = self.action
        payload = action_payload(act, templates or {})
        return ActionMap(
            name=self.name,
            trigger=trigger,
            channel=act.type,
            action=payload,
            queue=act.chat.queue if act.chat else None,
            priority=self.priority,
            activation={"nextPage": "next_page", "nextVisit": "next_visit"}.get(
                self.activation.type,
                self.activation.type,  # type: ignore[arg-type]
            ),
            delay_ms=_ms(self.activation.delay, "activation.delay"),
            include_urls=tuple(Predicate("glob", u) for u in self.pages.include),
            exclude_urls=tuple(Predicate("glob", u) for u in self.pages.exclude),
            schedule=self.schedule.to_core(),
            caps=self.caps.to_core() if self.caps else None,
            holdout=self.holdout_percent / 100,
            per_assignment_of=self.once_per_assignment_of,
            enabled=self.enabled,
        )


def action_payload(act: Action, templates: dict[str, ContentTemplate]) -> dict[str, Any]:
    """What the widget is sent (or the webhook worker is given), with the template applied.

    Without a template a content offer carries no style of its own: the widget then uses
    ``init``'s theme, else the site's widget config, else its defaults.

    >>> act = Action.model_validate({"type": "content", "content": {"title": "Hi"}})
    >>> content = action_payload(act, {})["content"]
    >>> content["layout"], "style" in content
    ('slide-in', False)
    """
    out: dict[str, Any] = {"timeoutMs": _ms(act.timeout, "timeout")}
    if act.content is not None:
        c = act.content.model_dump(mode="json", by_alias=True, exclude_none=True)
        t = templates.get(act.content.template or "")
        c["layout"] = act.content.layout or (t.layout if t else "slide-in")
        # Only a template's style goes with the offer: the widget lets an action's style win
        # over the site's look and init's theme, so defaults sent here would hide both.
        if t is not None:
            c["style"] = t.style.model_dump(mode="json", by_alias=True)
        c.pop("template", None)
        out["content"] = c
    else:  # the other types' parts go as written (the validator: only its own is given)
        part = getattr(act, act.type)
        out[act.type] = part.model_dump(mode="json", by_alias=True, exclude_none=True)
    if act.texts:
        out["texts"] = act.texts
    return out


class PacingDoc(Document):
    service_level: float = Field(default=0.8, gt=0, le=1)
    answer_within: Duration = "20s"
    short_abandon: Duration = "5s"


class EngagementSettings(Document):
    """Workspace-wide engagement settings: caps per channel and the pacing target."""

    kind: Literal["engagement"] = "engagement"
    name: str = Field(default="default", pattern=_NAME)
    caps: dict[OnPageChannel, CapsDoc] = Field(default_factory=dict)
    pacing: PacingDoc = Field(default_factory=PacingDoc)


class SkillNeed(Document):
    skill: str = Field(pattern=_NAME)
    min_proficiency: int = Field(default=1, ge=1, le=5)


class RingDoc(Document):
    """A bullseye ring: after this wait, these requirements apply instead."""

    after_wait: Duration
    skills: list[SkillNeed] = Field(default_factory=list)
    require_language: bool = True


class PredictiveDoc(Document):
    enabled: bool = False
    method: Literal["greedy", "assignment"] = "assignment"
    dry_run: bool = False
    hold_timeout: Duration = "12s"
    # Greedy: hold for a better agent only when the expected gain outweighs the expected
    # wait within the queue's service-level target ("wait_cost"), or by the anchor's rule.
    hold_rule: Literal["wait_cost", "anchor"] = "wait_cost"
    min_free_agents: int = Field(default=4, ge=1, le=1000)
    exploration: Literal["off", "thompson", "epsilon"] = "off"
    balance: Literal["idle_time", "occupancy"] = "idle_time"
    # Predicted KPI given up per scarce language an agent speaks that the interaction does
    # not need (joint assignment): keeps e.g. Spanish speakers for Spanish callers when the
    # scores are close. Measured on the simulator: 0.01 keeps the speed of answer.
    reserve_weight: float = Field(default=0.01, ge=0, le=1)
    # A permanent share of interactions routed by standard routing (ongoing value).
    control_share: float = Field(default=0.2, ge=0, le=1)


class ComparisonDoc(Document):
    """A comparison test: predictive against standard, randomly per interaction or in
    alternating time slices (warm-up slices excluded)."""

    mode: Literal["off", "interaction", "slices"] = "off"
    start: datetime | None = None
    slice: Duration = "1h"
    warmup_slices: int = Field(default=1, ge=0, le=100)


class CannedResponse(Document):
    """A ready answer an agent picks from the queue's list; ``language`` narrows it to the
    conversations in that language (none: every language)."""

    title: str = Field(min_length=1, max_length=80)
    text: str = Field(min_length=1, max_length=2000)
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}$")


class QueueDoc(Document):
    """A queue: routing (media, skills, language, strategy, bullseye, wrap-up codes, its
    KPI and predictive routing) and, for chat, the figures pacing starts from (measured
    figures replace these defaults once chats are routed)."""

    kind: Literal["queue"] = "queue"
    name: str = Field(pattern=_NAME)
    description: str = Field(default="", max_length=500)
    media: list[Literal["chat", "message", "voice"]] = Field(default_factory=lambda: ["chat"])
    skills: list[SkillNeed] = Field(default_factory=list)
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}$")
    priority: int = Field(default=0, ge=-100, le=100)
    strategy: Literal["longest_idle", "round_robin", "least_occupied", "best_skill"] = (
        "longest_idle"
    )
    rings: list[RingDoc] = Field(default_factory=list, max_length=10)
    wrap_up_codes: list[str] = Field(default_factory=list, max_length=200)
    canned_responses: list[CannedResponse] = Field(default_factory=list, max_length=200)
    kpi: str | None = Field(default=None, pattern=_NAME)
    predictive: PredictiveDoc = Field(default_factory=PredictiveDoc)
    comparison: ComparisonDoc = Field(default_factory=ComparisonDoc)
    service_level_within: Duration = "20s"
    capacity_per_agent: int = Field(default=2, ge=1, le=20)
    handle_time: Duration = "6m"
    patience: Duration = "2m"
    arrival_rate_per_hour: float = Field(default=20.0, ge=0)
    acceptance_rate: float = Field(default=0.3, gt=0, le=1)


class AgentDoc(Document):
    """An agent: skills with proficiency 1–5, languages, capacity per medium, queues."""

    kind: Literal["agent"] = "agent"
    name: str = Field(pattern=_NAME)  # the agent id
    display_name: str = Field(default="", max_length=120)
    skills: dict[str, int] = Field(default_factory=dict)
    languages: list[str] = Field(default_factory=list)
    capacity: dict[Literal["chat", "message", "voice"], int] = Field(
        default_factory=lambda: {"chat": 2}
    )
    queues: list[str] | None = None  # None: every queue

    @field_validator("skills")
    @classmethod
    def _skills(cls, v: dict[str, int]) -> dict[str, int]:
        for skill, level in v.items():
            if not 1 <= level <= 5:
                raise ValueError(f"proficiency of {skill!r} must be 1..5, not {level}")
        return v


class KpiDoc(Document):
    """What a queue's predictive routing optimises, and how its success is known."""

    kind: Literal["kpi"] = "kpi"
    name: str = Field(pattern=_NAME)
    type: KpiType
    tracking: Literal["wrapUp", "outcome", "measured"] = "wrapUp"
    success_codes: list[str] = Field(default_factory=list)
    attribution_window_days: float = Field(default=30, gt=0, le=365)

    def to_core(self) -> Any:
        from opportune.core.kpis import KPI

        tracking = {"wrapUp": "wrap_up"}.get(self.tracking, self.tracking)
        try:
            return KPI(
                self.name,
                self.type,
                tracking,
                frozenset(self.success_codes),  # type: ignore[arg-type]
                self.attribution_window_days,
            )
        except ValueError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None

    @model_validator(mode="after")
    def _valid(self) -> KpiDoc:
        self.to_core()
        return self

    @property
    def outcome_id(self) -> str | None:
        """The outcome id attributions of an outcome-tracked KPI are posted with."""
        return kpi_outcome_id(self.name) if self.tracking == "outcome" else None


def kpi_outcome_id(kpi_name: str) -> str:
    """The generated outcome id of a KPI: derived from its name, so every process and the
    workspace files and the API agree on it without storing it.

    >>> kpi_outcome_id("loan-value")
    'kpi-248430d4-6d84-59d9-9ce6-7105e514616f'
    """
    import uuid

    return f"kpi-{uuid.uuid5(uuid.NAMESPACE_URL, f'opportune:kpi:{kpi_name}')}"


class QueueKpiDoc(Document):
    """The KPI a queue optimises, set over the API (``PUT /v1/queues/{name}/kpi``): it
    replaces the queue document's ``kpi``; ``kpi: null`` removes it."""

    kind: Literal["queueKpi"] = "queueKpi"
    name: str = Field(pattern=_NAME)  # the queue
    kpi: str | None = Field(default=None, pattern=_NAME)


def kpi_fits_queue(kpi: KpiDoc, queue: QueueDoc) -> str | None:
    """Why ``kpi`` cannot be ``queue``'s (a success code the queue's agents cannot give),
    or None."""
    if kpi.tracking == "wrapUp":
        lost = sorted(set(kpi.success_codes) - set(queue.wrap_up_codes))
        if lost:
            return (
                f"success code(s) {lost} of kpi {kpi.name!r} are not wrap-up codes of "
                f"queue {queue.name!r}"
            )
    return None


ENGAGEMENT_KINDS: dict[str, type[Document]] = {
    "actionMap": ActionMapDoc,
    "contentTemplate": ContentTemplate,
    "engagement": EngagementSettings,
    "queue": QueueDoc,
    "agent": AgentDoc,
    "kpi": KpiDoc,
}


def build_maps(
    maps: list[ActionMapDoc],
    *,
    segments: dict[str, Any],
    outcomes: set[str],
    templates: dict[str, ContentTemplate],
    queues: set[str],
    flows: set[str] | None = None,
) -> list[ActionMap]:
    """The core action maps, checked against the rest of the workspace; ``RulesError``
    naming every map whose references do not resolve."""
    from opportune.core.conditions import references, scored_outcomes
    from opportune.core.rules import RulesError

    known = Known(
        queues=frozenset(queues),
        templates=frozenset(templates),
        flows=None if flows is None else frozenset(flows),
    )
    problems: list[tuple[str, str, str]] = []
    out: list[ActionMap] = []
    seen: set[str] = set()
    for doc in maps:
        if doc.name in seen:
            problems.append(("actionMap", doc.name, "defined twice"))
        seen.add(doc.name)
        core = doc.to_core(templates)
        for ref in sorted(references(core.trigger) - set(segments)):
            problems.append(("actionMap", doc.name, f"refers to unknown segment {ref!r}"))
        for ref in sorted(scored_outcomes(core.trigger) - outcomes):
            problems.append(("actionMap", doc.name, f"reads the score of unknown outcome {ref!r}"))
        part = getattr(doc.action, doc.action.type).model_dump(by_alias=True, exclude_none=True)
        for problem in ACTION_TYPES[core.channel].problems(part, known):
            problems.append(("actionMap", doc.name, problem))
        seg = doc.once_per_assignment_of
        if seg is not None:
            if seg not in segments:
                problems.append(("actionMap", doc.name, f"oncePerAssignmentOf: unknown {seg!r}"))
            elif getattr(segments[seg], "scope", "customer") != "customer":
                problems.append(
                    ("actionMap", doc.name, f"oncePerAssignmentOf: {seg!r} is not customer-scope")
                )
        out.append(core)
    if problems:
        raise RulesError(problems)
    return out
