"""The web event model: what the snippet sends to ``POST /v1/events``.

Decoding and shape validation are done by msgspec against these Structs (fast, and
errors name the field path, e.g. ``$.events[3].url``). Rules that depend on the server's
clock or the site live in :func:`check_event` and take ``now`` as an argument.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

EventType = Literal[
    "page_view",
    "search",
    "click",
    "form_submitted",
    "form_abandoned",
    "form_error",
    "idle",
    "scroll",
    "viewport",
    "custom",
    "identify",
]
EVENT_TYPES: Final[tuple[str, ...]] = get_args(EventType)

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Url = Annotated[str, msgspec.Meta(max_length=2048)]
Text = Annotated[str, msgspec.Meta(max_length=512)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Value = Annotated[str, msgspec.Meta(max_length=1024)] | int | float | bool | None
Attributes = Annotated[dict[Key, Value], msgspec.Meta(max_length=50)]
# Milliseconds since the Unix epoch, bounded to years 2001..2286 so nonsense is refused early.
EpochMs = Annotated[int, msgspec.Meta(ge=1_000_000_000_000, le=9_999_999_999_999)]


class Identity(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Identifiers given to ``opportune('identify', ...)``; at least one is required."""

    email: Annotated[str, msgspec.Meta(max_length=254)] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    customer_id: Annotated[str, msgspec.Meta(max_length=128)] | None = msgspec.field(
        default=None, name="customerId"
    )


class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One thing a visitor did. ``ts`` is the browser's clock, corrected with ``sentAt``."""

    id: Id
    type: EventType
    ts: EpochMs
    url: Url | None = None
    title: Text | None = None
    referrer: Url | None = None
    name: Text | None = None
    query: Text | None = None
    attributes: Attributes = msgspec.field(default_factory=dict)
    identity: Identity | None = None
    traits: Attributes = msgspec.field(default_factory=dict)
    # The snippet's number for the event, rising across the visitor's page loads: the
    # server keeps the visitor's events in this order (core/client_clock.py). Optional.
    seq: Annotated[int, msgspec.Meta(ge=0, le=2**53)] | None = None


class Context(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Facts about the browser that hold for the whole batch."""

    locale: Annotated[str, msgspec.Meta(max_length=35)] | None = None
    timezone: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    screen_width: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = msgspec.field(
        default=None, name="screenWidth"
    )
    screen_height: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = msgspec.field(
        default=None, name="screenHeight"
    )


class Batch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A batch of events of one visitor, as ``POST /v1/events`` takes it."""

    site_key: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = msgspec.field(
        name="siteKey"
    )
    visitor_id: Id = msgspec.field(name="visitorId")
    sent_at: EpochMs = msgspec.field(name="sentAt")
    events: Annotated[list[Event], msgspec.Meta(min_length=1)]
    context: Context = msgspec.field(default_factory=Context)


BATCH_DECODER: Final = msgspec.json.Decoder(Batch)

ReportState = Literal[
    "offered",
    "accepted",
    "rejected",
    "timeout",
    "ignored",
    "started",
    "engaged",
    "abandoned",
    "completed",
]


class ActionReport(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What the widget saw the visitor do with an offer (``id``: the action instance)."""

    id: Annotated[str, msgspec.Meta(min_length=4, max_length=40, pattern=r"^ai_[0-9a-f]+$")]
    state: ReportState
    ts: EpochMs
    form: (
        Annotated[
            dict[Key, Annotated[str, msgspec.Meta(max_length=1024)]], msgspec.Meta(max_length=20)
        ]
        | None
    ) = None


class ReportBatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``POST /v1/actions``: reports of one visitor."""

    site_key: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = msgspec.field(
        name="siteKey"
    )
    visitor_id: Id = msgspec.field(name="visitorId")
    sent_at: EpochMs = msgspec.field(name="sentAt")
    reports: Annotated[list[ActionReport], msgspec.Meta(min_length=1, max_length=50)]


class Recheck(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``POST /v1/recheck``: look again at a visitor's action maps now (time-based triggers)."""

    site_key: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = msgspec.field(
        name="siteKey"
    )
    visitor_id: Id = msgspec.field(name="visitorId")
    sent_at: EpochMs = msgspec.field(name="sentAt")


REPORTS_DECODER: Final = msgspec.json.Decoder(ReportBatch)
RECHECK_DECODER: Final = msgspec.json.Decoder(Recheck)

# Strings the identify call must never accept as an identifier: they are what a page
# sends when its own variable is empty, and would merge unrelated people into one.
JUNK_IDENTIFIERS: Final = frozenset(
    {
        "",
        "0",
        "-1",
        "null",
        "none",
        "nil",
        "undefined",
        "nan",
        "anonymous",
        "guest",
        "unknown",
        "true",
        "false",
        "id",
        "email",
        "phone",
        "distinct_id",
        "distinctid",
        "user",
        "user_id",
        "customer",
        "not_authenticated",
        "[object object]",
        "{}",
        "[]",
    }
)


class Refusal(msgspec.Struct, frozen=True):
    """Why one event of an otherwise valid batch was not accepted."""

    index: int
    id: str
    reason: str


def check_event(
    event: Event,
    *,
    index: int,
    now_ms: int,
    skew_ms: int,
    max_age_ms: int,
    max_future_ms: int,
) -> Refusal | None:
    """Per-event rules that need the server clock; ``None`` when the event is acceptable.

    ``skew_ms`` is server time minus the browser's ``sentAt``; applying it to ``ts`` puts
    the event on the server's clock so a browser with a wrong clock is not refused.

    >>> e = Event(id="e1", type="page_view", ts=1_700_000_000_000, url="https://a.b/")
    >>> check_event(e, index=0, now_ms=1_700_000_000_000, skew_ms=0, max_age_ms=3_600_000,
    ...             max_future_ms=120_000) is None
    True
    """
    ts = event.ts + skew_ms
    if ts < now_ms - max_age_ms:
        return Refusal(index, event.id, f"too old: older than {max_age_ms // 1000} s")
    if ts > now_ms + max_future_ms:
        return Refusal(index, event.id, "in the future: timestamp ahead of the server clock")
    if event.type == "page_view" and not event.url:
        return Refusal(index, event.id, "page_view needs url")
    if event.type == "search" and not event.query:
        return Refusal(index, event.id, "search needs query")
    if event.type == "custom" and not event.name:
        return Refusal(index, event.id, "custom event needs name")
    if event.type == "identify":
        ident = event.identity
        if ident is None or not (ident.email or ident.phone or ident.customer_id):
            return Refusal(index, event.id, "identify needs identity.email, phone or customerId")
    elif event.identity is not None or event.traits:
        return Refusal(index, event.id, "identity and traits are only allowed on identify")
    bad = unstorable_field(event)
    if bad is not None:
        return Refusal(
            index, event.id, f"text the database cannot store (NUL or a lone surrogate) in {bad}"
        )
    return None


# PostgreSQL's text cannot hold NUL, and no driver encodes a lone surrogate as UTF-8: an
# event carrying either would fail its batch's write every time it is resent.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _unstorable(text: str) -> bool:
    # isascii() is O(1) in CPython: most text skips the regular expression.
    return "\x00" in text or (not text.isascii() and _SURROGATE.search(text) is not None)


def unstorable_field(event: Event) -> str | None:
    """The first field of ``event`` with text a database cannot store, or ``None``.

    >>> unstorable_field(Event(id="e1", type="custom", ts=1_700_000_000_000, name="a" + chr(0)))
    'name'
    >>> unstorable_field(Event(id="e1", type="custom", ts=1_700_000_000_000, name="añb"))
    """
    # One test over the five texts together first: the hot path (clean text) in one scan.
    if _unstorable(f"{event.url}{event.title}{event.referrer}{event.name}{event.query}"):
        for name in ("url", "title", "referrer", "name", "query"):
            value = getattr(event, name)
            if value is not None and _unstorable(value):
                return name
    bad = _unstorable_in("attributes", event.attributes) if event.attributes else None
    if bad is None and event.traits:
        bad = _unstorable_in("traits", event.traits)
    ident = event.identity
    if bad is None and ident is not None:
        for name in ("email", "phone", "customer_id"):
            value = getattr(ident, name)
            if value is not None and _unstorable(value):
                return "identity." + ("customerId" if name == "customer_id" else name)
    return bad


def _unstorable_in(where: str, values: dict[str, Any]) -> str | None:
    for key, value in values.items():
        if _unstorable(key):
            return f"a key of {where}"
        if isinstance(value, str) and _unstorable(value):
            return f"{where}.{key}"
    return None


def unstorable_context(context: Context) -> str | None:
    """The field of a batch's ``context`` with text a database cannot store, or ``None``.

    >>> unstorable_context(Context(locale="es" + chr(0) + "ES"))
    'locale'
    """
    for name in ("locale", "timezone"):
        value = getattr(context, name)
        if value is not None and _unstorable(value):
            return name
    return None
