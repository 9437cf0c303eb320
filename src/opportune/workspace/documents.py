"""The typed documents a workspace holds. Field names are camelCase in YAML and JSON.

>>> doc = SegmentDoc.model_validate({"name": "mobile", "expiresAfterDays": 7,
...                                  "condition": {"attribute": "device", "equals": "mobile"}})
>>> doc.to_core().expires_after_days
7
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

from opportune.core.conditions import parse_condition
from opportune.core.outcomes import Outcome as CoreOutcome
from opportune.core.pages import PageGroup
from opportune.core.segments import Segment as CoreSegment

_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class Document(BaseModel):
    """Base of every workspace document: unknown fields are errors, names are slugs."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


# The widget's own words (sdk/opportune-widget.js, TEXTS): a site may override any of them.
WIDGET_TEXT_KEYS = frozenset(
    (
        *("close", "noThanks", "startChat", "connecting", "queued", "failed", "required"),
        *("email", "tel", "choose", "chat", "message", "send", "talk", "end", "ended"),
        *("rate", "rated", "stars", "position", "wait", "waitSoon", "joined", "typing"),
        *("read", "sending", "notSent", "reconnecting", "you"),
    )
)
# The same checks as the widget's THEME: plain values only, so a theme cannot load a URL
# or close the CSS declaration it lands in.
_THEME_FORMS = {
    "colour": (
        re.compile(r"^(#[\da-f]{3,8}|(rgb|hsl)a?\([\d\s.,%/]+\)|[a-z]{3,20})$", re.I),
        "a colour (#hex, rgb(), hsl() or a colour name)",
    ),
    "radius": (re.compile(r"^\d{1,3}(\.\d+)?(px|rem|em|%)?$"), "a length like 12px, 1rem or 50%"),
    "font": (re.compile(r"^[\w\s,'\"-]{1,200}$"), "a font list like Georgia, serif"),
}


class WidgetTheme(Document):
    """Colours, corner radius and font of the site's widget."""

    primary: str | None = None
    background: str | None = None
    text: str | None = None
    radius: str | None = None
    font: str | None = None

    @field_validator("primary", "background", "text", "radius", "font")
    @classmethod
    def _plain(cls, value: str | None, info: ValidationInfo) -> str | None:
        form = info.field_name if info.field_name in ("radius", "font") else "colour"
        pattern, words = _THEME_FORMS[form]
        if value is not None and not pattern.match(value.strip()):
            raise ValueError(f"{value!r} is not {words}")
        return value.strip() if value is not None else None


class WidgetConfig(Document):
    """How the site's widget looks and speaks: theme, logo, name and its own words."""

    theme: WidgetTheme = Field(default_factory=WidgetTheme)
    logo: str | None = Field(default=None, max_length=2048)
    name: str | None = Field(default=None, min_length=1, max_length=80)
    texts: dict[Literal["en", "es"], dict[str, str]] = Field(default_factory=dict)

    @field_validator("logo")
    @classmethod
    def _logo(cls, logo: str | None) -> str | None:
        if logo is None:
            return None
        parts = urlsplit(logo)
        relative = not parts.scheme and logo.startswith("/") and not logo.startswith("//")
        if not relative and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ValueError(f"{logo!r} is not an http(s) URL or a path starting with /")
        return logo

    @field_validator("texts")
    @classmethod
    def _texts(cls, texts: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for locale, words in texts.items():
            for key, value in words.items():
                if key not in WIDGET_TEXT_KEYS:
                    raise ValueError(
                        f"texts.{locale}.{key}: not one of the widget's words "
                        f"({', '.join(sorted(WIDGET_TEXT_KEYS))})"
                    )
                if not value.strip() or len(value) > 300:
                    raise ValueError(f"texts.{locale}.{key}: 1 to 300 characters")
        return texts


_SITE_KEY = r"^[A-Za-z0-9_-]+$"


class PreviousKey(BaseModel):
    """A site's former key, still accepted until ``validUntil`` (a rotation's overlap)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    key: str = Field(min_length=8, max_length=64, pattern=_SITE_KEY)
    valid_until: datetime

    @field_validator("valid_until")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2027-01-31T00:00:00Z")
        return v

    @property
    def valid_until_ms(self) -> int:
        return int(self.valid_until.timestamp() * 1000)


class Site(Document):
    """A website that embeds the snippet: its public key and where it may be called from.

    ``previousKeys`` rotate the key: pages still carrying an old key keep working until
    its ``validUntil``, then get 403 ``site_key_expired``."""

    kind: Literal["site"] = "site"
    name: str = Field(pattern=_NAME)
    key: str = Field(min_length=8, max_length=64, pattern=_SITE_KEY)
    previous_keys: list[PreviousKey] = Field(default_factory=list, max_length=16)
    origins: list[str] = Field(min_length=1)
    session_timeout_minutes: int = Field(default=20, ge=1, le=24 * 60)
    default_phone_region: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    widget: WidgetConfig = Field(default_factory=WidgetConfig)

    @field_validator("origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{origin!r} is not an origin like https://www.example.com")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"{origin!r}: an origin has no path, query or fragment")
        return [o.rstrip("/") for o in origins]

    @field_validator("previous_keys")
    @classmethod
    def _distinct(cls, keys: list[PreviousKey], info: ValidationInfo) -> list[PreviousKey]:
        seen = {info.data.get("key")}
        for k in keys:
            if k.key in seen:
                raise ValueError(f"key {k.key!r} is listed twice (or is the current key)")
            seen.add(k.key)
        return keys

    def all_keys(self) -> list[str]:
        """The current key, then the previous ones."""
        return [self.key, *(k.key for k in self.previous_keys)]

    def allows_origin(self, origin: str | None) -> bool:
        """Whether a browser at ``origin`` may send events for this site."""
        if "*" in self.origins:
            return True
        return origin is not None and origin.rstrip("/") in self.origins


class SegmentDoc(Document):
    """A named condition over a visit (``scope: session``) or a customer (``customer``).

    ``condition`` is the condition language (docs/conditions.md); it is validated by the
    core parser, whose errors carry the exact path under ``condition``.
    """

    kind: Literal["segment"] = "segment"
    name: str = Field(pattern=_NAME)
    description: str = Field(default="", max_length=500)
    colour: str = Field(default="#4c78a8", pattern=r"^#[0-9a-fA-F]{6}$")
    scope: Literal["session", "customer"] = "session"
    expires_after_days: int = Field(default=30, ge=1, le=3650)
    visible_to_agents: bool = True
    condition: dict[str, Any]

    def to_core(self) -> CoreSegment:
        """The core segment; raises ``ConditionError`` with a path under ``condition``."""
        return CoreSegment(
            self.name,
            parse_condition(self.condition, ["condition"]),
            self.scope,
            self.expires_after_days,
        )


class ScoringDoc(BaseModel):
    """Whether an outcome is predicted, and how much history it needs first."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    enabled: bool = False
    min_sessions: int = Field(default=1000, ge=10)
    min_achievements: int = Field(default=50, ge=5)


class OutcomeDoc(Document):
    """A goal of the site, achieved at most once per visit when its condition first holds."""

    kind: Literal["outcome"] = "outcome"
    name: str = Field(pattern=_NAME)
    description: str = Field(default="", max_length=500)
    condition: dict[str, Any]
    value_from: str | None = Field(
        default=None, min_length=1, max_length=64, description="event attribute with the value"
    )
    scoring: ScoringDoc = Field(default_factory=ScoringDoc)

    def to_core(self) -> CoreOutcome:
        return CoreOutcome(
            self.name, parse_condition(self.condition, ["condition"]), self.value_from
        )


class PageGroupDoc(Document):
    """A named set of pages, by URL globs (``*`` any run of characters, case-insensitive);
    outcome models count page views per group."""

    kind: Literal["pageGroup"] = "pageGroup"
    name: str = Field(pattern=_NAME)
    description: str = Field(default="", max_length=500)
    urls: list[str] = Field(min_length=1, max_length=50)

    def to_core(self) -> PageGroup:
        return PageGroup(self.name, tuple(self.urls))


KINDS: dict[str, type[Document]] = {
    "site": Site,
    "segment": SegmentDoc,
    "outcome": OutcomeDoc,
    "pageGroup": PageGroupDoc,
}
