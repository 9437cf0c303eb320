"""A customer's own history as import lines: the event schema of ``/v1/events`` plus the
visitor (and customer) each event belongs to, with its original time.

One line is one event, in JSON lines (an object per line) or CSV (a header row naming the
columns). Decoding is pure: a line's text in, a :class:`HistoryEvent` or the reason the line
is refused out (``LineError``, which the caller reports with the line's number).

>>> ev = decode_json_line(b'{"visitorId": "v1", "id": "e1", "type": "page_view", '
...                       b'"ts": 1700000000000, "url": "https://a.b/"}')
>>> ev.visitor_id, ev.ts
('v1', 1700000000000)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final

import msgspec

from opportune.core.events import Context, Event, Id, Identity

_PATH = re.compile(r" - at `(\$[^`]*)`")


class HistoryEvent(Event, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One event of the past: an ``Event`` (``ts`` is the original time, UTC ms, taken as
    it is: no ``sentAt`` correction) and whose it was.

    ``customerId`` links the visitor to that customer from this event on, as
    ``opportune('identify', {customerId})`` would have; ``userAgent``, ``ip`` and
    ``context`` describe the device where a visit starts (as a live batch's headers do).
    """

    visitor_id: Id = msgspec.field(name="visitorId")
    customer_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = msgspec.field(
        default=None, name="customerId"
    )
    user_agent: Annotated[str, msgspec.Meta(max_length=512)] | None = msgspec.field(
        default=None, name="userAgent"
    )
    ip: Annotated[str, msgspec.Meta(max_length=45)] | None = None
    context: Context | None = None


class LineError(ValueError):
    """Why a line cannot be imported (the caller adds the line's number)."""


_DECODER: Final = msgspec.json.Decoder(HistoryEvent)

# CSV: the columns a header may name. Objects are JSON text; an empty cell is absent.
CSV_TEXT: Final = ("id", "type", "visitorId", "customerId", "url", "title", "referrer", "name")
CSV_COLUMNS: Final = frozenset(
    {*CSV_TEXT, "query", "userAgent", "ip", "ts", "seq", "attributes", "traits", "context"}
    | {"email", "phone"}
)
CSV_REQUIRED: Final = ("id", "type", "ts", "visitorId")


def decode_json_line(raw: bytes | str) -> HistoryEvent:
    """One JSON line; ``LineError`` naming the field when it does not fit the schema."""
    try:
        return _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise LineError(_message(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise LineError(f"not valid JSON: {exc}") from None


def check_header(columns: list[str]) -> None:
    """Refuse a CSV header with unknown or missing columns, naming them.

    >>> try:
    ...     check_header(["id", "type", "ts", "visitorId", "colour"])
    ... except LineError as exc:
    ...     print(str(exc)[:26])
    unknown column(s): colour;
    """
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown:
        known = ", ".join(sorted(CSV_COLUMNS))
        raise LineError(f"unknown column(s): {', '.join(unknown)}; the columns are: {known}")
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        raise LineError(f"missing column(s): {', '.join(missing)}")


def decode_csv_row(row: Mapping[str, str | None]) -> HistoryEvent:
    """One CSV row (column -> cell) as the JSON line it stands for.

    ``ts`` is milliseconds since the epoch or an ISO 8601 time with its offset;
    ``attributes``, ``traits`` and ``context`` are JSON objects; ``email`` and ``phone``
    (and ``customerId``) are an identify row's identity.

    >>> ev = decode_csv_row({"id": "e1", "type": "search", "ts": "2024-03-01T10:00:00Z",
    ...                      "visitorId": "v1", "query": "mortgage", "attributes": ""})
    >>> ev.ts, ev.query, ev.attributes
    (1709287200000, 'mortgage', {})
    """
    obj: dict[str, Any] = {}
    for key, cell in row.items():
        if key is None:
            raise LineError("more cells than the header has columns")
        if cell is None or cell == "":
            continue
        if key == "ts":
            obj["ts"] = _time(cell)
        elif key == "seq":
            obj["seq"] = _integer("seq", cell)
        elif key in ("attributes", "traits", "context"):
            obj[key] = _object(key, cell)
        else:
            obj[key] = cell
    ident: dict[str, Any] = {k: obj.pop(k) for k in ("email", "phone") if k in obj}
    if obj.get("type") == "identify" and (ident or "customerId" in obj):
        if "customerId" in obj:
            ident["customerId"] = obj["customerId"]
        obj["identity"] = ident
    elif ident:
        raise LineError("email and phone are only allowed on identify rows")
    try:
        return msgspec.convert(obj, HistoryEvent)
    except msgspec.ValidationError as exc:
        raise LineError(_message(str(exc))) from None


def identify_for(ev: HistoryEvent) -> Event:
    """The identify that a line's ``customerId`` stands for, just before the line's event
    (its id made from the line's, so a rerun makes the same one).

    >>> ev = decode_json_line(b'{"visitorId": "v", "customerId": "C-7", "id": "e1",'
    ...                       b' "type": "click", "ts": 1700000000000}')
    >>> i = identify_for(ev)
    >>> i.type, i.ts, i.identity.customer_id, i.id == identify_for(ev).id
    ('identify', 1700000000000, 'C-7', True)
    """
    digest = hashlib.blake2b(
        f"{ev.visitor_id}\x00{ev.id}\x00{ev.customer_id}".encode(), digest_size=12
    ).hexdigest()
    return Event(
        id=f"idn:{digest}",
        type="identify",
        ts=ev.ts,
        identity=Identity(customer_id=ev.customer_id),
    )


def _message(text: str) -> str:
    m = _PATH.search(text)
    bare = _PATH.sub("", text).strip()
    if m is None:
        return bare
    return f"{m.group(1).replace('$.', '', 1) or '$'}: {bare}"


def _integer(name: str, cell: str) -> int:
    try:
        return int(cell)
    except ValueError:
        raise LineError(f"{name}: not an integer: {cell[:40]!r}") from None


def _time(cell: str) -> int:
    if cell.isdigit():
        return int(cell)
    try:
        at = datetime.fromisoformat(cell.replace("Z", "+00:00"))
    except ValueError:
        raise LineError(
            f"ts: neither milliseconds since the epoch nor an ISO 8601 time: {cell[:40]!r}"
        ) from None
    if at.tzinfo is None:
        raise LineError(f"ts: give the time's UTC offset (e.g. {cell[:19]}Z): {cell[:40]!r}")
    return int(at.timestamp() * 1000)


def _object(name: str, cell: str) -> dict[str, Any]:
    try:
        value = json.loads(cell)
    except ValueError:
        raise LineError(f"{name}: not JSON: {cell[:40]!r}") from None
    if not isinstance(value, dict):
        raise LineError(f"{name}: not a JSON object")
    return value
