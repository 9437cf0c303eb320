"""Action types: what a map does when it fires — a content offer, a chat invitation, a bot,
a webhook call — each one plug-in behind one small interface, found by its channel name.

The decision (:mod:`opportune.core.actionmaps`), the engine, the workspace validation and
the widget payload ask the type instead of branching on the channel: whether it shows on
the page, what blocks it beyond the common rules, what the widget or the webhook worker is
given, how the visitor's reports move its state, its defaults, and what its document must
refer to. A new type implements :class:`ActionType`, is registered in :data:`ACTION_TYPES`
and is done when ``tests/core/test_action_types.py`` passes for it.

>>> action_type("chat").on_page, action_type("webhook").on_page
(True, False)
>>> from opportune.core.actionmaps import ActionMap
>>> from opportune.core.conditions import parse_condition
>>> bot = {"bot": {"flow": "returns", "title": "Hi"}}
>>> m = ActionMap("m", parse_condition({"searched": "returns"}), "bot", bot)
>>> payload("ai_1", m, "en", {})["bot"], payload("ai_1", m, "en", {})["timeoutMs"]
({'flow': 'returns', 'title': 'Hi'}, 30000)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from opportune.core.conditions import parse_duration

if TYPE_CHECKING:
    from opportune.core.actionmaps import ActionMap, Caps, Engagement

Channel = Literal["content", "chat", "bot", "webhook"]
OnPageChannel = Literal["content", "chat", "bot"]

OFFER_LIFETIME_MS: Final = 30_000  # an offer on the page is answered or expires within this
WEBHOOK_TIMEOUT_MS: Final = 5_000  # one webhook call's wait for an answer
WEBHOOK_RETRIES: Final = 4  # calls after the first before a webhook is a dead letter


def duration_text(ms: int) -> str:
    """A default duration as workspace documents write it.

    >>> duration_text(OFFER_LIFETIME_MS), duration_text(500)
    ('30s', '500ms')
    """
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


@dataclass(frozen=True, slots=True)
class Defaults:
    """What an action document leaves out: the offer's lifetime; a webhook's timeout and
    retries (the one home of these figures: documents, engine and pacing read them here)."""

    lifetime_ms: int = OFFER_LIFETIME_MS
    timeout_ms: int | None = None
    retries: int | None = None


@dataclass(frozen=True, slots=True)
class Blocking:
    """What a type's own block rules may look at, for one due map at one moment."""

    engagement: Engagement
    now: int
    caps: Caps  # the map's caps, or the workspace's for its channel
    pacing: Callable[[str | None], str | None]  # queue -> why pacing holds offers back


@dataclass(frozen=True, slots=True)
class Known:
    """What an action document may refer to in the rest of the workspace."""

    queues: frozenset[str] = frozenset()
    templates: frozenset[str] = frozenset()
    flows: frozenset[str] | None = None  # bot flows; None: not checked here


class ActionType:
    """One kind of action. Subclasses set the class attributes and override what differs.

    ``transitions``: the states an instance may move to from each state, from the
    decision's ``qualified`` to the last report; the contract suite holds every type to it.
    """

    channel: str = ""
    on_page: bool = True  # shown by the widget (an offer) or run server-side
    capped: bool = True  # has frequency caps (workspace ``caps`` per channel)
    defaults: Defaults = Defaults()
    texts: tuple[str, ...] = ()  # fields a locale's texts may replace
    example: ClassVar[Mapping[str, Any]] = {}  # a valid document part of this type (docs, tests)
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {}

    def blocks(self, m: ActionMap, b: Blocking) -> str | None:
        """Why ``m`` may not fire now beyond page rules and schedule, or None."""
        e, cap, now = b.engagement, b.caps, b.now
        if e.showing.active:
            return f"existing offer: {e.showing.map} is showing"
        if e.last_offer_at and now - e.last_offer_at < cap.min_wait_ms:
            return f"frequency cap: an offer {(now - e.last_offer_at) / 1000:.0f} s ago"
        if cap.none_after_rejection and m.channel in e.rejected:
            return f"frequency cap: a {m.channel} offer was rejected this visit"
        return None

    def payload(
        self, instance: str, m: ActionMap, locale: str, prefill: Mapping[str, Any]
    ) -> dict[str, Any]:
        """What the widget is given for one offer: texts for the locale, a form prefilled."""
        act = dict(m.action)
        texts = act.pop("texts", {}).get(locale, {})
        out: dict[str, Any] = {
            "id": instance,
            "map": m.name,
            "type": m.channel,
            "locale": locale,
            "timeoutMs": act.pop("timeoutMs", self.defaults.lifetime_ms),
        }
        if self.channel in act:
            out[self.channel] = self.part(act[self.channel], texts, prefill)
        return out

    def part(
        self, doc: Mapping[str, Any], texts: Mapping[str, str], prefill: Mapping[str, Any]
    ) -> dict[str, Any]:
        """This type's part of the payload, with the locale's texts over the defaults."""
        part = dict(doc)
        part.update({k: texts[k] for k in self.texts if k in texts})
        return part

    def answer(self, e: Engagement, state: str, at: int) -> None:
        """What a report does to the visitor's engagement (beyond the offer leaving the page)."""
        if state == "rejected":
            e.rejected[self.channel] = at

    def problems(self, doc: Mapping[str, Any], known: Known) -> list[str]:
        """What this type's document part refers to that the workspace does not define."""
        return []


_DECIDED: Final = {
    "qualified": frozenset({"holdout", "blocked", "offered"}),
    "blocked": frozenset({"blocked", "offered"}),
    "holdout": frozenset[str](),
}
_ANSWERED: Final = frozenset({"accepted", "rejected", "timeout", "ignored"})
_CONVERSATION: Final = {
    "started": frozenset({"engaged", "abandoned", "completed"}),
    "engaged": frozenset({"abandoned", "completed"}),
    "abandoned": frozenset[str](),
    "completed": frozenset[str](),
}


class ContentType(ActionType):
    """A content offer: a banner, modal or slide-in with a call to action."""

    channel = "content"
    texts = ("title", "body", "imageAlt")
    example: ClassVar[Mapping[str, Any]] = {
        "title": "Need help activating?",
        "cta": {"label": "Guide", "url": "/help"},
    }
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        **_DECIDED,
        "offered": frozenset({"offered"}) | _ANSWERED,
        **{s: frozenset[str]() for s in _ANSWERED},
    }

    def part(
        self, doc: Mapping[str, Any], texts: Mapping[str, str], prefill: Mapping[str, Any]
    ) -> dict[str, Any]:
        c = super().part(doc, texts, prefill)
        if "cta" in c and "ctaLabel" in texts:
            c["cta"] = {**c["cta"], "label": texts["ctaLabel"]}
        return c

    def problems(self, doc: Mapping[str, Any], known: Known) -> list[str]:
        template = doc.get("template")
        if template and template not in known.templates:
            return [f"uses unknown content template {template!r}"]
        return []


class ChatType(ActionType):
    """A chat invitation on a queue, paced by the queue's outlook; a registration form."""

    channel = "chat"
    texts = ("title", "body", "accept", "decline")
    example: ClassVar[Mapping[str, Any]] = {
        "queue": "help",
        "invitation": {"title": "Chat with us?"},
    }
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        **_DECIDED,
        "offered": frozenset({"offered"}) | _ANSWERED,
        "accepted": frozenset({"started", "abandoned"}),
        **{s: frozenset[str]() for s in _ANSWERED - {"accepted"}},
        **_CONVERSATION,
    }

    def blocks(self, m: ActionMap, b: Blocking) -> str | None:
        reason = super().blocks(m, b)
        if reason is not None:
            return reason
        if b.caps.none_after_agent_chat and b.engagement.agent_chat_at:
            return "frequency cap: already chatted with an agent this visit"
        return b.pacing(m.queue)

    def part(
        self, doc: Mapping[str, Any], texts: Mapping[str, str], prefill: Mapping[str, Any]
    ) -> dict[str, Any]:
        chat: dict[str, Any] = json.loads(json.dumps(doc))  # a deep copy: the form is edited
        inv = chat["invitation"]
        inv.update({k: texts[k] for k in self.texts if k in texts})
        for f in (chat.get("form") or {}).get("fields", []):
            source = f.pop("prefill", None)
            if source and prefill.get(source) is not None:
                f["value"] = str(prefill[source])
        return chat

    def answer(self, e: Engagement, state: str, at: int) -> None:
        super().answer(e, state, at)
        if state == "started":
            e.agent_chat_at = at

    def problems(self, doc: Mapping[str, Any], known: Known) -> list[str]:
        out = []
        queue = doc.get("queue")
        if queue is not None and queue not in known.queues:
            out.append(f"offers chat on unknown queue {queue!r}")
        flow = doc.get("bot")
        if flow is not None and known.flows is not None and flow not in known.flows:
            out.append(f"starts the chat with unknown bot flow {flow!r}")
        return out


class BotType(ActionType):
    """A bot flow opened in the chat window at once (the widget reports it started)."""

    channel = "bot"
    texts = ("title", "greeting")
    example: ClassVar[Mapping[str, Any]] = {"flow": "returns", "title": "Returns assistant"}
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        **_DECIDED,
        "offered": frozenset({"offered", "started"}),
        **_CONVERSATION,
    }

    def problems(self, doc: Mapping[str, Any], known: Known) -> list[str]:
        flow = doc.get("flow")
        if flow is not None and known.flows is not None and flow not in known.flows:
            return [f"runs unknown bot flow {flow!r}"]
        return []


class WebhookType(ActionType):
    """A call to another system, made server-side by the webhook worker (never on the page,
    never competing with offers); ``offered`` means queued to send."""

    channel = "webhook"
    on_page = False
    capped = False
    defaults = Defaults(timeout_ms=WEBHOOK_TIMEOUT_MS, retries=WEBHOOK_RETRIES)
    example: ClassVar[Mapping[str, Any]] = {
        "url": "https://crm.example.com/leads",
        "body": {"visitor": "{{ visitor.id }}"},
    }
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        **_DECIDED,
        "offered": frozenset({"completed", "errored"}),
        "completed": frozenset[str](),
        "errored": frozenset[str](),
    }

    def blocks(self, m: ActionMap, b: Blocking) -> str | None:
        return None

    def payload(
        self, instance: str, m: ActionMap, locale: str, prefill: Mapping[str, Any]
    ) -> dict[str, Any]:
        """What the webhook worker is given: the call, its body still a template."""
        hook = m.action.get("webhook", {})
        return {
            "id": instance,
            "map": m.name,
            "type": m.channel,
            "method": hook.get("method", "POST"),
            "url": hook.get("url", ""),
            "headers": dict(hook.get("headers", {})),
            "body": hook.get("body", {}),
            "timeoutMs": (
                parse_duration(hook["timeout"], ["timeout"])
                if "timeout" in hook
                else self.defaults.timeout_ms
            ),
            "attempts": 1 + int(hook.get("retries", self.defaults.retries or 0)),
        }


ACTION_TYPES: Final[Mapping[str, ActionType]] = {
    t.channel: t for t in (ContentType(), ChatType(), BotType(), WebhookType())
}


def action_type(channel: str) -> ActionType:
    """The registered type of a channel; ``KeyError`` naming it if there is none."""
    try:
        return ACTION_TYPES[channel]
    except KeyError:
        raise KeyError(f"unknown action type {channel!r}") from None


def payload(instance: str, m: ActionMap, locale: str, prefill: Mapping[str, Any]) -> dict[str, Any]:
    """What the widget (or the webhook worker) is given for one fired map."""
    return action_type(m.channel).payload(instance, m, locale, prefill)
