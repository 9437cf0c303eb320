"""What a bot step may test and how a visitor's answer is checked: conditions over segments,
outcome scores, slots and the registration form, and the validation of a question's answer.
Pure, like the interpreter (``core.bot``) that uses them.

>>> when = parse_when({"any": [{"segment": "vip"}, {"slot": "amount", "above": 25000}]})
>>> when.holds({"amount": Check("number").clean("30,000 €") or ""}, BotContext())
True
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from opportune.core.conditions.errors import ConditionError

_EMAIL: Final = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")


def fold(text: str) -> str:
    """Lower case without accents or outer spaces: how answers are compared.

    >>> fold("  Sí, AHORA ")
    'si, ahora'
    """
    decomposed = unicodedata.normalize("NFKD", text.strip().lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


# -- what a step may test --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BotContext:
    """What conditions can read besides the slots: the visitor's segments, outcome
    probabilities and the registration form's values."""

    segments: frozenset[str] = frozenset()
    scores: Mapping[str, float] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class When:
    """A condition of a ``condition`` step (``parse_when`` builds it from a document)."""

    op: Literal["segment", "score", "slot", "form", "all", "any", "not"]
    name: str = ""
    above: float | None = None
    below: float | None = None
    equals: str | None = None
    one_of: tuple[str, ...] = ()
    present: bool | None = None
    parts: tuple[When, ...] = ()

    def holds(self, slots: Mapping[str, str], ctx: BotContext) -> bool:
        if self.op == "all":
            return all(p.holds(slots, ctx) for p in self.parts)
        if self.op == "any":
            return any(p.holds(slots, ctx) for p in self.parts)
        if self.op == "not":
            return not self.parts[0].holds(slots, ctx)
        if self.op == "segment":
            return self.name in ctx.segments
        if self.op == "score":
            p = ctx.scores.get(self.name)
            if p is None:
                return False
            return (self.above is None or p > self.above) and (self.below is None or p < self.below)
        value = (slots if self.op == "slot" else ctx.form).get(self.name)
        if self.present is not None:
            return (value is not None and value != "") == self.present
        if value is None:
            return False
        if self.equals is not None:
            return fold(value) == fold(self.equals)
        if self.one_of:
            return fold(value) in {fold(o) for o in self.one_of}
        return _between(value, self.above, self.below)

    def names(self, op: str) -> set[str]:
        """The segments (``op="segment"``) or outcomes (``"score"``) this condition reads."""
        found = {self.name} if self.op == op else set()
        return found.union(*(p.names(op) for p in self.parts))


def _between(value: str, above: float | None, below: float | None) -> bool:
    try:
        n = float(value)
    except ValueError:
        return False
    return (above is None or n > above) and (below is None or n < below)


_WHEN_KEYS: Final = {
    "segment": frozenset(),
    "score": frozenset({"above", "below"}),
    "slot": frozenset({"equals", "in", "present", "above", "below"}),
    "form": frozenset({"equals", "in", "present", "above", "below"}),
}


def parse_when(raw: Any, path: list[str | int] | None = None) -> When:
    """A condition from its document form; ``ConditionError`` names the bad field.

    >>> parse_when({"all": [{"segment": "vip"}, {"score": "loan", "above": 0.5}]}).op
    'all'
    >>> parse_when({"slot": "x"}, ["if"])
    Traceback (most recent call last):
    ...
    opportune.core.conditions.errors.ConditionError: if: give equals, in, present, above or below
    """
    at = list(path or [])
    if not isinstance(raw, Mapping) or not raw:
        raise ConditionError(at, "a condition is a mapping like {segment: name}")
    if len(raw) == 1 and next(iter(raw)) in ("all", "any"):
        op = next(iter(raw))
        items = raw[op]
        if not isinstance(items, list) or not items:
            raise ConditionError([*at, op], "a non-empty list of conditions")
        parts = tuple(parse_when(c, [*at, op, i]) for i, c in enumerate(items))
        return When(op, parts=parts)
    if len(raw) == 1 and "not" in raw:
        return When("not", parts=(parse_when(raw["not"], [*at, "not"]),))
    ops = [k for k in raw if k in _WHEN_KEYS]
    if len(ops) != 1:
        raise ConditionError(at, "one of segment, score, slot, form, all, any, not")
    op = ops[0]
    name = raw[op]
    if not isinstance(name, str) or not name:
        raise ConditionError([*at, op], "a name")
    for key in sorted(set(raw) - {op} - _WHEN_KEYS[op]):
        raise ConditionError([*at, key], f"unknown field for a {op} condition")
    return _leaf(op, name, raw, at)


def _leaf(op: str, name: str, raw: Mapping[str, Any], at: list[str | int]) -> When:
    if op == "segment":
        return When("segment", name)
    bounds: dict[str, float] = {}
    for key in ("above", "below"):
        v = raw.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConditionError([*at, key], "a number")
        if op == "score" and not 0 <= v <= 1:
            raise ConditionError([*at, key], "a probability between 0 and 1")
        bounds[key] = float(v)
    if op == "score" and not bounds:
        raise ConditionError(at, "give above or below")
    kind: Literal["score", "slot", "form"] = "slot" if op == "slot" else "form"
    if op == "score" or bounds:
        kind = "score" if op == "score" else kind
        return When(kind, name, above=bounds.get("above"), below=bounds.get("below"))
    if "present" in raw:
        if not isinstance(raw["present"], bool):
            raise ConditionError([*at, "present"], "true or false")
        return When(kind, name, present=raw["present"])
    if "equals" in raw:
        return When(kind, name, equals=str(raw["equals"]))
    if "in" in raw:
        if not isinstance(raw["in"], list) or not raw["in"]:
            raise ConditionError([*at, "in"], "a non-empty list of values")
        return When(kind, name, one_of=tuple(str(v) for v in raw["in"]))
    raise ConditionError(at, "give equals, in, present, above or below")


@dataclass(frozen=True, slots=True)
class Check:
    """How an answer to a question is validated (and normalised)."""

    kind: Literal["any", "regex", "digits", "options", "email", "number"] = "any"
    pattern: str = ""
    length: int | None = None  # digits: exactly this many
    options: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def clean(self, text: str) -> str | None:
        """The value to keep, or None when ``text`` is not an answer of this kind.

        >>> Check("digits", length=4).clean(" 12 34"), Check("digits", length=4).clean("123")
        ('1234', None)
        >>> Check("options", options=("Visa", "Débito")).clean("debito")
        'Débito'
        """
        value = text.strip()
        if not value:
            return None
        if self.kind == "digits":
            digits = re.sub(r"[\s-]", "", value)
            ok = digits.isascii() and digits.isdigit()
            return digits if ok and (self.length is None or len(digits) == self.length) else None
        if self.kind == "options":
            return next((o for o in self.options if fold(o) == fold(value)), None)
        if self.kind == "email":
            return value if _EMAIL.match(value) else None
        if self.kind == "regex":
            return value if re.fullmatch(self.pattern, value) else None
        if self.kind == "number":
            return self._number(value)
        return value

    def _number(self, value: str) -> str | None:
        digits = re.sub(r"[\s,€$£]", "", value)
        try:
            n = float(digits)
        except ValueError:
            return None
        if n != n or (self.minimum is not None and n < self.minimum):
            return None
        if self.maximum is not None and n > self.maximum:
            return None
        return f"{n:g}"
