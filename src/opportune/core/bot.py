"""The bot flow interpreter: what the bot says next, given the flow, where the visitor is in
it and what they just sent. Pure: the intent matcher's guess is computed outside and handed
in, so the same turn gives the same answer in the server, the simulator and the tests.

A turn runs steps until one waits for the visitor (buttons, a question, a message with no
``next``) or ends the bot (a hand-over to a queue, or ``end``: resolved). Every turn that
the visitor starts ends in at least one reply.

>>> flow = Flow(
...     name="faq", languages=("en",), threshold=0.5, start="hi", handover_queue="support",
...     handover_text={"en": "A colleague will join you."},
...     fallback=Fallback(text={"en": "Sorry?"}, after=2),
...     intents={"pin": Intent("pin", step="pin")},
...     steps={"hi": Say("hi", {"en": "Hello! Ask me anything."}),
...            "pin": End("pin", {"en": "Your PIN is in the app."})},
... )
>>> turn = begin(flow, locale="en")
>>> turn.replies[0].text, turn.done
('Hello! Ask me anything.', False)
>>> turn = respond(flow, turn.state, text="forgot my pin", guess=("pin", 0.9), locale="en")
>>> turn.replies[0].text, turn.done, turn.state.intent
('Your PIN is in the app.', True, 'pin')
>>> escalate(flow, turn.state, locale="en").handover
Handover(queue='support', reason='asked for a person (intent pin)')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from opportune.core.bot_checks import BotContext, Check, When, fold, parse_when

__all__ = [
    "Ask", "BotContext", "BotReply", "BotState", "BotTurn", "Branch", "Button", "Check",
    "Choose", "End", "Fallback", "Flow", "HandOver", "Handover", "Intent", "Link", "Media",
    "Say", "Step", "When", "begin", "escalate", "fold", "parse_when", "respond", "say",
]  # fmt: skip

Text = Mapping[str, str]  # locale -> words
MAX_CHAIN: Final = 64  # steps one turn may run before the flow is taken to loop

# -- the compiled flow -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Button:
    """A button: pressing it runs a step, an intent, or hands over."""

    label: Text
    value: str
    step: str | None = None
    intent: str | None = None
    handover: bool = False


@dataclass(frozen=True, slots=True)
class Say:
    name: str
    text: Text
    next: str | None = None  # None: wait for the visitor's words


@dataclass(frozen=True, slots=True)
class Choose:
    name: str
    text: Text
    buttons: tuple[Button, ...]


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    text: Text
    label: Text
    url: str
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Media:
    name: str
    kind: Literal["image", "video"]
    url: str
    alt: Text
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Ask:
    name: str
    prompt: Text
    slot: str
    check: Check
    retry: Text
    next: str
    max_retries: int = 2
    on_fail: str | None = None  # None: hand over after the last retry


@dataclass(frozen=True, slots=True)
class Branch:
    name: str
    when: When
    then: str
    otherwise: str


@dataclass(frozen=True, slots=True)
class HandOver:
    name: str
    text: Text
    queue: str | None = None  # None: the intent's queue, else the flow's
    reason: str = ""


@dataclass(frozen=True, slots=True)
class End:
    name: str
    text: Text


Step = Say | Choose | Link | Media | Ask | Branch | HandOver | End


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    step: str
    queue: str | None = None  # where a person continues this intent
    examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fallback:
    """What the bot says when it does not understand, and what it does after ``after`` times
    in a row: hand over, or offer ``buttons``."""

    text: Text
    after: int = 2
    then: Literal["handover", "buttons"] = "handover"
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True, slots=True)
class Flow:
    name: str
    languages: tuple[str, ...]
    threshold: float
    start: str
    handover_queue: str
    handover_text: Text
    fallback: Fallback
    intents: Mapping[str, Intent]
    steps: Mapping[str, Step]


# -- the conversation's side -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BotReply:
    """One bot message: its words and, for rich content, the payload the widget renders
    (``buttons``, ``link``, ``image``, ``video``; docs/conversations.md)."""

    text: str
    payload: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Handover:
    """The bot gives the conversation to a queue; ``reason`` is for the agent."""

    queue: str
    reason: str


@dataclass(frozen=True, slots=True)
class BotState:
    """Where a conversation is in its flow; stored as JSON between turns."""

    step: str | None = None  # the step waiting for an answer (buttons, a question)
    intent: str | None = None
    confidence: float = 0.0
    slots: Mapping[str, str] = field(default_factory=dict)
    fallbacks: int = 0  # in a row
    retries: int = 0  # of the question waiting
    resolved: bool = False
    queue: str | None = None  # handed over to

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "intent": self.intent,
            "confidence": self.confidence,
            "slots": dict(self.slots),
            "fallbacks": self.fallbacks,
            "retries": self.retries,
            "resolved": self.resolved,
            "queue": self.queue,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> BotState:
        """The state ``to_json`` wrote; ``ValueError`` naming a field of the wrong type."""
        slots = raw.get("slots") or {}
        if not isinstance(slots, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in slots.items()
        ):
            raise ValueError("bot state: slots must map names to strings")
        for key in ("step", "intent", "queue"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise ValueError(f"bot state: {key} must be a string or null")
        for key in ("fallbacks", "retries"):
            if not isinstance(raw.get(key, 0), int) or isinstance(raw.get(key), bool):
                raise ValueError(f"bot state: {key} must be an integer")
        conf = raw.get("confidence", 0.0)
        if isinstance(conf, bool) or not isinstance(conf, int | float):
            raise ValueError("bot state: confidence must be a number")
        return cls(
            step=raw.get("step"),
            intent=raw.get("intent"),
            confidence=float(conf),
            slots=dict(slots),
            fallbacks=int(raw.get("fallbacks", 0)),
            retries=int(raw.get("retries", 0)),
            resolved=bool(raw.get("resolved", False)),
            queue=raw.get("queue"),
        )


@dataclass(frozen=True, slots=True)
class BotTurn:
    """What one turn produced: replies in order, the new state, and how the bot ended."""

    replies: tuple[BotReply, ...]
    state: BotState
    handover: Handover | None = None
    done: bool = False  # the flow ended (resolved): no agent needed


def say(text: Text, locale: str, flow: Flow) -> str:
    """``text`` in ``locale``, else in the flow's first language."""
    return text.get(locale) or text.get(flow.languages[0]) or next(iter(text.values()), "")


def _locale(flow: Flow, locale: str) -> str:
    short = locale.split("-")[0].lower()
    return short if short in flow.languages else flow.languages[0]


# -- the turns ---------------------------------------------------------------------------


def begin(flow: Flow, *, locale: str, context: BotContext | None = None) -> BotTurn:
    """The bot's opening: the flow's ``start`` step and whatever follows it."""
    return _run(flow, flow.start, BotState(), _locale(flow, locale), context or BotContext())


def respond(
    flow: Flow,
    state: BotState,
    *,
    text: str,
    choice: str | None = None,
    guess: tuple[str | None, float] = (None, 0.0),
    locale: str,
    context: BotContext | None = None,
) -> BotTurn:
    """The bot's answer to the visitor's words (``text``) or button (``choice``); ``guess``
    is the intent matcher's (intent, confidence) for ``text``."""
    loc, ctx = _locale(flow, locale), context or BotContext()
    if state.queue is not None:  # already handed over: a person will answer
        return BotTurn((BotReply(say(flow.handover_text, loc, flow)),), state)
    state = replace(state, resolved=False)
    waiting = flow.steps.get(state.step) if state.step else None
    pressed = _button(flow, waiting, choice, text)
    if pressed is not None:
        return _press(flow, state, pressed, loc, ctx)
    if isinstance(waiting, Ask):
        value = waiting.check.clean(text)
        if value is not None:
            slots = {**state.slots, waiting.slot: value}
            after = replace(state, slots=slots, retries=0, fallbacks=0, step=None)
            return _run(flow, waiting.next, after, loc, ctx)
        if not _confident(flow, guess, state.intent):
            return _retry(flow, waiting, state, loc, ctx)
    intent, confidence = guess
    if intent is not None and intent in flow.intents and confidence >= flow.threshold:
        return _start_intent(flow, state, intent, confidence, loc, ctx)
    return _fallback(flow, state, loc)


def escalate(flow: Flow, state: BotState, *, locale: str) -> BotTurn:
    """The visitor asked for a person: hand over to the intent's queue or the flow's."""
    loc = _locale(flow, locale)
    why = "asked for a person" + (f" (intent {state.intent})" if state.intent else "")
    return _handover(flow, state, [], None, why, flow.handover_text, loc)


def _confident(flow: Flow, guess: tuple[str | None, float], current: str | None) -> bool:
    """Whether words given instead of an answer are clearly another request."""
    intent, confidence = guess
    return (
        intent is not None
        and intent in flow.intents
        and intent != current
        and confidence >= max(flow.threshold, 0.5)
    )


def _button(flow: Flow, waiting: Step | None, choice: str | None, text: str) -> Button | None:
    """The button pressed (by value), or typed (its label in any language, or its value)."""
    offered = [*(waiting.buttons if isinstance(waiting, Choose) else ()), *flow.fallback.buttons]
    if choice is not None:
        found = next((b for b in offered if b.value == choice), None)
        if found is not None:
            return found
    typed = fold(text)
    if not typed:
        return None
    return next(
        (b for b in offered if typed in {fold(b.value), *(fold(t) for t in b.label.values())}),
        None,
    )


def _press(flow: Flow, state: BotState, b: Button, loc: str, ctx: BotContext) -> BotTurn:
    state = replace(state, fallbacks=0, retries=0, step=None)
    if b.handover:
        return escalate(flow, state, locale=loc)
    if b.intent is not None:
        return _start_intent(flow, state, b.intent, 1.0, loc, ctx)
    return _run(flow, b.step or flow.start, state, loc, ctx)


def _start_intent(
    flow: Flow, state: BotState, intent: str, confidence: float, loc: str, ctx: BotContext
) -> BotTurn:
    found = flow.intents.get(intent)
    if found is None:
        return _fallback(flow, state, loc)
    after = replace(state, intent=intent, confidence=confidence, fallbacks=0, retries=0)
    return _run(flow, found.step, replace(after, step=None), loc, ctx)


def _retry(flow: Flow, ask: Ask, state: BotState, loc: str, ctx: BotContext) -> BotTurn:
    tries = state.retries + 1
    if tries > ask.max_retries:
        after = replace(state, retries=0, step=None)
        if ask.on_fail is not None:
            return _run(flow, ask.on_fail, after, loc, ctx)
        why = f"no valid {ask.slot} after {tries} tries"
        return _handover(flow, after, [], None, why, flow.handover_text, loc)
    reply = BotReply(say(ask.retry, loc, flow))
    return BotTurn((reply,), replace(state, retries=tries, step=ask.name))


def _fallback(flow: Flow, state: BotState, loc: str) -> BotTurn:
    fb = flow.fallback
    misses = state.fallbacks + 1
    state = replace(state, fallbacks=misses)
    if misses >= fb.after and fb.then == "handover":
        why = f"{misses} fallbacks"
        return _handover(flow, state, [], None, why, flow.handover_text, loc)
    text = say(fb.text, loc, flow)
    if misses >= fb.after and fb.buttons:
        buttons = [{"label": say(b.label, loc, flow), "value": b.value} for b in fb.buttons]
        return BotTurn((BotReply(text, {"buttons": buttons}),), state)
    return BotTurn((BotReply(text),), state)


def _handover(
    flow: Flow,
    state: BotState,
    replies: list[BotReply],
    queue: str | None,
    reason: str,
    text: Text,
    loc: str,
) -> BotTurn:
    intent = flow.intents.get(state.intent or "")
    to = queue or (intent.queue if intent else None) or flow.handover_queue
    replies.append(BotReply(say(text, loc, flow)))
    after = replace(state, step=None, queue=to)
    return BotTurn(tuple(replies), after, handover=Handover(to, reason))


def _run(flow: Flow, name: str, state: BotState, loc: str, ctx: BotContext) -> BotTurn:
    """Run steps from ``name`` until one waits for the visitor or ends the bot."""
    replies: list[BotReply] = []
    current: str | None = name
    for _ in range(MAX_CHAIN):
        step = flow.steps.get(current or "")
        if step is None or current is None:
            why = f"the flow has no step {current!r}"
            return _handover(flow, state, replies, None, why, flow.handover_text, loc)
        if isinstance(step, Branch):
            current = step.then if step.when.holds(state.slots, ctx) else step.otherwise
            continue
        if isinstance(step, HandOver):
            why = step.reason or (f"intent {state.intent}" if state.intent else "the flow")
            return _handover(flow, state, replies, step.queue, why, step.text, loc)
        if isinstance(step, End):
            replies.append(BotReply(say(step.text, loc, flow)))
            after = replace(state, step=None, resolved=True, fallbacks=0)
            return BotTurn(tuple(replies), after, done=True)
        replies.append(_reply(flow, step, loc))
        if isinstance(step, Choose | Ask):
            return BotTurn(tuple(replies), replace(state, step=step.name, retries=0))
        current = step.next
        if current is None:
            return BotTurn(tuple(replies), replace(state, step=None))
    why = "the flow ran in a loop"
    return _handover(flow, state, replies, None, why, flow.handover_text, loc)


def _reply(flow: Flow, step: Say | Choose | Link | Media | Ask, loc: str) -> BotReply:
    if isinstance(step, Say):
        return BotReply(say(step.text, loc, flow))
    if isinstance(step, Ask):
        return BotReply(say(step.prompt, loc, flow))
    if isinstance(step, Choose):
        buttons = [{"label": say(b.label, loc, flow), "value": b.value} for b in step.buttons]
        return BotReply(say(step.text, loc, flow), {"buttons": buttons})
    if isinstance(step, Link):
        label = say(step.label, loc, flow)
        link = {"label": label, "url": step.url}
        return BotReply(say(step.text, loc, flow) if step.text else label, {"link": link})
    alt = say(step.alt, loc, flow)
    if step.kind == "image":
        return BotReply(alt, {"image": {"url": step.url, "alt": alt}})
    return BotReply(alt, {"video": {"url": step.url}})
