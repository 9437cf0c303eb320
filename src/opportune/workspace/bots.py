"""Bot flow documents (``kind: botFlow``): intents with example utterances per language,
the steps the bot runs, its confidence threshold, fallback and hand-over (docs/conversations.md).

``problems()`` finds what a single document gets wrong (unknown steps, missing translations,
loops); the loader adds what needs the rest of the workspace (queues) and puts lines to both.

>>> doc = BotFlowDoc.model_validate({
...     "name": "faq", "start": "hi", "handoverQueue": "support",
...     "handoverText": {"en": "A colleague will join you."},
...     "fallback": {"text": {"en": "Sorry, say it another way?"}},
...     "intents": [{"name": "pin", "step": "pin",
...                  "examples": {"en": ["forgot my pin", "reset pin", "new pin"]}}],
...     "steps": [{"name": "hi", "type": "message", "text": {"en": "Hello!"}},
...               {"name": "pin", "type": "end", "text": {"en": "See the app."}}]})
>>> doc.problems(), doc.to_core().steps["pin"].text["en"]
([], 'See the app.')
>>> doc.model_copy(update={"start": "nowhere"}).problems()
[(('start',), "unknown step 'nowhere'")]
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from opportune.core import bot as core
from opportune.core.conditions import ConditionError
from opportune.workspace.documents import _NAME, Document

Lang = Literal["en", "es"]
Words = Annotated[str, Field(min_length=1, max_length=2000)]
LocalText = dict[Lang, Words]
Loc = tuple[str | int, ...]
MIN_EXAMPLES = 3  # per intent and language: fewer cannot train a matcher


class ButtonDoc(Document):
    """A button: its label per language, and exactly one of step, intent or handover."""

    label: LocalText
    value: str | None = Field(default=None, min_length=1, max_length=64)
    step: str | None = Field(default=None, pattern=_NAME)
    intent: str | None = Field(default=None, pattern=_NAME)
    handover: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> ButtonDoc:
        if sum([self.step is not None, self.intent is not None, self.handover]) != 1:
            raise ValueError("a button leads to exactly one of step, intent or handover: true")
        return self

    def to_core(self) -> core.Button:
        value = self.value or self.step or self.intent or "handover"
        return core.Button(dict(self.label), value, self.step, self.intent, self.handover)


class ValidationDoc(Document):
    """How an answer is checked: any text, a regex, N digits, one of options, an email,
    a number between bounds."""

    type: Literal["any", "regex", "digits", "options", "email", "number"] = "any"
    pattern: str | None = Field(default=None, max_length=500)
    length: int | None = Field(default=None, ge=1, le=64)
    options: list[str] = Field(default_factory=list, max_length=50)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _fits(self) -> ValidationDoc:
        if self.type == "regex":
            if not self.pattern:
                raise ValueError("a regex validation needs a pattern")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a regular expression: {exc}") from None
        if self.type == "options" and not self.options:
            raise ValueError("an options validation needs options")
        return self

    def to_core(self) -> core.Check:
        return core.Check(
            self.type, self.pattern or "", self.length, tuple(self.options), self.min, self.max
        )


class _Step(Document):
    name: str = Field(pattern=_NAME)


class MessageStep(_Step):
    """Words; then ``next``, or wait for the visitor's next request."""

    type: Literal["message"]
    text: LocalText
    next: str | None = Field(default=None, pattern=_NAME)


class ButtonsStep(_Step):
    type: Literal["buttons"]
    text: LocalText
    buttons: list[ButtonDoc] = Field(min_length=1, max_length=10)


class LinkStep(_Step):
    type: Literal["link"]
    text: LocalText | None = None
    label: LocalText
    url: str = Field(pattern=r"^(https?://|/)", max_length=2048)
    next: str | None = Field(default=None, pattern=_NAME)


class MediaStep(_Step):
    type: Literal["image", "video"]
    url: str = Field(pattern=r"^(https?://|/)", max_length=2048)
    alt: LocalText
    next: str | None = Field(default=None, pattern=_NAME)


class AskStep(_Step):
    """A question whose answer is kept in ``slot`` once it passes ``validation``."""

    type: Literal["ask"]
    slot: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
    prompt: LocalText
    validation: ValidationDoc = Field(default_factory=ValidationDoc)
    retry: LocalText
    max_retries: int = Field(default=2, ge=0, le=10)
    next: str = Field(pattern=_NAME)
    on_fail: str | None = Field(default=None, pattern=_NAME)


class ConditionStep(_Step):
    type: Literal["condition"]
    when: dict[str, Any] = Field(alias="if")
    then: str = Field(pattern=_NAME)
    otherwise: str = Field(alias="else", pattern=_NAME)


class HandoverStep(_Step):
    type: Literal["handover"]
    text: LocalText
    queue: str | None = Field(default=None, pattern=_NAME)
    reason: str = Field(default="", max_length=200)


class EndStep(_Step):
    """The bot resolved the request: no agent needed."""

    type: Literal["end"]
    text: LocalText


StepDoc = Annotated[
    MessageStep
    | ButtonsStep
    | LinkStep
    | MediaStep
    | AskStep
    | ConditionStep
    | HandoverStep
    | EndStep,
    Field(discriminator="type"),
]


class IntentDoc(Document):
    name: str = Field(pattern=_NAME)
    examples: dict[Lang, list[Annotated[str, Field(min_length=1, max_length=500)]]]
    step: str = Field(pattern=_NAME)
    queue: str | None = Field(default=None, pattern=_NAME)


class FallbackDoc(Document):
    """Said when no intent is confident; the ``after``-th miss in a row hands over (or
    offers ``buttons``)."""

    text: LocalText
    after: int = Field(default=2, ge=1, le=10)
    then: Literal["handover", "buttons"] = "handover"
    buttons: list[ButtonDoc] = Field(default_factory=list, max_length=10)

    @model_validator(mode="after")
    def _buttons(self) -> FallbackDoc:
        if self.then == "buttons" and not self.buttons:
            raise ValueError("then: buttons needs buttons")
        return self


class BotFlowDoc(Document):
    """A bot flow: what it understands (intents) and what it does (steps)."""

    kind: Literal["botFlow"] = "botFlow"
    name: str = Field(pattern=_NAME)
    description: str = Field(default="", max_length=500)
    languages: list[Lang] = Field(default_factory=lambda: ["en"], min_length=1)
    threshold: float = Field(default=0.4, ge=0, le=1)
    start: str = Field(pattern=_NAME)
    handover_queue: str = Field(pattern=_NAME)
    handover_text: LocalText
    fallback: FallbackDoc
    intents: list[IntentDoc] = Field(min_length=1, max_length=100)
    steps: list[StepDoc] = Field(min_length=1, max_length=500)

    def problems(
        self,
        queues: Collection[str] | None = None,
        *,
        segments: Collection[str] | None = None,
        outcomes: Collection[str] | None = None,
    ) -> list[tuple[Loc, str]]:
        """(location, message) of everything wrong inside the flow, and of the queues,
        segments and outcomes it names that are not in those given."""
        out: list[tuple[Loc, str]] = []
        steps = {s.name for s in self.steps}
        intents = {i.name for i in self.intents}
        out += _twice([s.name for s in self.steps], "steps", "step")
        out += _twice([i.name for i in self.intents], "intents", "intent")
        for loc, ref, kind in self._references():
            known = steps if kind == "step" else intents
            if ref not in known:
                out.append((loc, f"unknown {kind} {ref!r}"))
        for loc, text in self._texts():
            for lang in self.languages:
                if lang not in text:
                    out.append((loc, f"no {lang!r} text (the flow speaks {self.languages})"))
        for i, intent in enumerate(self.intents):
            for lang in self.languages:
                if len(intent.examples.get(lang, [])) < MIN_EXAMPLES:
                    at: Loc = ("intents", i, "examples", lang)
                    out.append((at, f"at least {MIN_EXAMPLES} {lang!r} examples"))
        for i, s in enumerate(self.steps):
            if isinstance(s, ConditionStep):
                try:
                    core.parse_when(s.when)
                except ConditionError as exc:
                    out.append((("steps", i, "if", *exc.path), exc.message))
        out += self._loops()
        if queues is not None:
            out += [(loc, f"unknown queue {q!r}") for loc, q in self._queues() if q not in queues]
        for i, s in enumerate(self.steps):
            if not isinstance(s, ConditionStep) or out:
                continue
            when = core.parse_when(s.when)
            for op, known in (("segment", segments), ("score", outcomes)):
                what = "segment" if op == "segment" else "outcome"
                for name in sorted(when.names(op) - set(known if known is not None else [])):
                    if known is not None:
                        out.append((("steps", i, "if"), f"unknown {what} {name!r}"))
        return out

    def _references(self) -> Iterator[tuple[Loc, str, Literal["step", "intent"]]]:
        yield ("start",), self.start, "step"
        for i, intent in enumerate(self.intents):
            yield ("intents", i, "step"), intent.step, "step"
        buttons: list[tuple[Loc, ButtonDoc]] = [
            (("fallback", "buttons", j), b) for j, b in enumerate(self.fallback.buttons)
        ]
        for i, s in enumerate(self.steps):
            for key in ("next", "on_fail", "then", "otherwise"):
                ref = getattr(s, key, None)
                if isinstance(ref, str):
                    yield ("steps", i, _ALIAS.get(key, key)), ref, "step"
            if isinstance(s, ButtonsStep):
                buttons += [(("steps", i, "buttons", j), b) for j, b in enumerate(s.buttons)]
        for loc, b in buttons:
            if b.step is not None:
                yield (*loc, "step"), b.step, "step"
            if b.intent is not None:
                yield (*loc, "intent"), b.intent, "intent"

    def _texts(self) -> Iterator[tuple[Loc, dict[Lang, str]]]:
        yield ("handoverText",), self.handover_text
        yield ("fallback", "text"), self.fallback.text
        for j, b in enumerate(self.fallback.buttons):
            yield ("fallback", "buttons", j, "label"), b.label
        for i, s in enumerate(self.steps):
            for key in ("text", "label", "alt", "prompt", "retry"):
                value = getattr(s, key, None)
                if isinstance(value, dict):
                    yield ("steps", i, key), value
            for j, b in enumerate(s.buttons if isinstance(s, ButtonsStep) else []):
                yield ("steps", i, "buttons", j, "label"), b.label

    def _queues(self) -> Iterator[tuple[Loc, str]]:
        yield ("handoverQueue",), self.handover_queue
        for i, intent in enumerate(self.intents):
            if intent.queue is not None:
                yield ("intents", i, "queue"), intent.queue
        for i, s in enumerate(self.steps):
            if isinstance(s, HandoverStep) and s.queue is not None:
                yield ("steps", i, "queue"), s.queue

    def _loops(self) -> list[tuple[Loc, str]]:
        """Steps that lead back to themselves without waiting for the visitor: a turn
        would never end."""
        index = {s.name: i for i, s in enumerate(self.steps)}
        onward: dict[str, list[str]] = {}
        for s in self.steps:
            if isinstance(s, ConditionStep):
                onward[s.name] = [s.then, s.otherwise]
            elif isinstance(s, MessageStep | LinkStep | MediaStep) and s.next is not None:
                onward[s.name] = [s.next]
        out: list[tuple[Loc, str]] = []
        for name in onward:
            seen: set[str] = set()
            todo = list(onward[name])
            while todo:
                cur = todo.pop()
                if cur == name:
                    out.append((("steps", index[name]), f"step {name!r} loops back to itself"))
                    break
                if cur not in seen:
                    seen.add(cur)
                    todo += onward.get(cur, [])
        return out

    def to_core(self) -> core.Flow:
        """The interpreter's flow (the document must have no ``problems()``)."""
        fb = self.fallback
        return core.Flow(
            name=self.name,
            languages=tuple(self.languages),
            threshold=self.threshold,
            start=self.start,
            handover_queue=self.handover_queue,
            handover_text=dict(self.handover_text),
            fallback=core.Fallback(
                dict(fb.text), fb.after, fb.then, tuple(b.to_core() for b in fb.buttons)
            ),
            intents={
                i.name: core.Intent(
                    i.name, i.step, i.queue, {k: tuple(v) for k, v in i.examples.items()}
                )
                for i in self.intents
            },
            steps={s.name: _step(s) for s in self.steps},
        )


_ALIAS = {"on_fail": "onFail", "otherwise": "else"}


def _twice(names: list[str], where: str, what: str) -> list[tuple[Loc, str]]:
    seen: set[str] = set()
    out: list[tuple[Loc, str]] = []
    for i, name in enumerate(names):
        if name in seen:
            out.append(((where, i, "name"), f"{what} {name!r} defined twice"))
        seen.add(name)
    return out


def _step(s: Any) -> core.Step:
    if isinstance(s, MessageStep):
        return core.Say(s.name, dict(s.text), s.next)
    if isinstance(s, ButtonsStep):
        return core.Choose(s.name, dict(s.text), tuple(b.to_core() for b in s.buttons))
    if isinstance(s, LinkStep):
        return core.Link(s.name, dict(s.text or {}), dict(s.label), s.url, s.next)
    if isinstance(s, MediaStep):
        return core.Media(s.name, s.type, s.url, dict(s.alt), s.next)
    if isinstance(s, AskStep):
        return core.Ask(
            s.name,
            dict(s.prompt),
            s.slot,
            s.validation.to_core(),
            dict(s.retry),
            s.next,
            s.max_retries,
            s.on_fail,
        )
    if isinstance(s, ConditionStep):
        return core.Branch(s.name, core.parse_when(s.when), s.then, s.otherwise)
    if isinstance(s, HandoverStep):
        return core.HandOver(s.name, dict(s.text), s.queue, s.reason)
    return core.End(s.name, dict(s.text))
