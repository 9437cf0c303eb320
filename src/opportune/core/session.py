"""Sessions: which visit an event belongs to, and what a visit's landing tells us.

A session is the events of one visitor with no gap longer than the timeout (20 minutes
by default). The server decides, from event times on its own clock, so that a browser with
no script state (a new tab, cleared storage) still lands in the right session.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


@dataclass(slots=True)
class SessionTrack:
    """The little a visitor's live state needs to place the next event in a session.

    ``previous_*`` remembers the visit before the current one, so an event that arrives late
    (a batch retried from the browser's outbox) can still land in the visit it belongs to.
    """

    number: int = 0
    session_id: str | None = None
    started_at: int = 0
    last_at: int = 0
    previous_id: str | None = None
    previous_started_at: int = 0
    previous_last_at: int = 0


def session_id_for(visitor_id: str, number: int) -> str:
    """A stable id for the ``number``-th visit of a visitor (stable across restarts/retries).

    >>> session_id_for("v1", 1) == session_id_for("v1", 1) != session_id_for("v1", 2)
    True
    """
    digest = hashlib.blake2b(f"{visitor_id}\x00{number}".encode(), digest_size=12)
    return digest.hexdigest()


class Placement(NamedTuple):
    """The session an event was placed in, and whether that session started with it."""

    session_id: str
    new: bool


def place(track: SessionTrack, visitor_id: str, ts: int, timeout_ms: int) -> Placement:
    """Place an event at ``ts`` in a session, updating ``track``.

    Rules, in order:
    1. no session yet, or ``ts`` is more than the timeout after the current session's last
       event: a new session starts;
    2. a ``ts`` before the current session's start that is within the timeout of the previous
       session's last event joins the previous session (a late event: it was sent from the
       browser's outbox after the visit ended; the two visits are not merged after the fact);
    3. otherwise a ``ts`` within the current session (or up to the timeout before its start)
       joins the current session;
    4. anything older joins the oldest session we still know (never starts a session in the
       past: the numbering of visits stays in time order).
    """
    if track.session_id is None or ts > track.last_at + timeout_ms:
        track.previous_id = track.session_id
        track.previous_started_at = track.started_at
        track.previous_last_at = track.last_at
        track.number += 1
        track.session_id = session_id_for(visitor_id, track.number)
        track.started_at = ts
        track.last_at = ts
        return Placement(track.session_id, True)
    late_for_previous = (
        ts < track.started_at
        and track.previous_id is not None
        and ts <= track.previous_last_at + timeout_ms
    )
    if not late_for_previous and (ts >= track.started_at - timeout_ms or track.previous_id is None):
        if ts > track.last_at:
            track.last_at = ts
        if ts < track.started_at:
            track.started_at = ts
        return Placement(track.session_id, False)
    if ts > track.previous_last_at:
        track.previous_last_at = ts
    assert track.previous_id is not None  # else the branch above returned
    return Placement(track.previous_id, False)


def _host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower() if host else None


def landing_attributes(url: str | None, referrer: str | None) -> dict[str, str | None]:
    """Attributes of a visit taken from its landing page: UTM parameters and referrer.

    A referrer on the landing page's own host is not an external referrer (it is the same
    site, e.g. a page opened in a new tab), so its domain is left empty.

    >>> a = landing_attributes("https://s.com/?utm_source=news&utm_campaign=Spring",
    ...                        "https://www.google.com/search?q=x")
    >>> a["utm_source"], a["utm_campaign"], a["referrer_domain"]
    ('news', 'Spring', 'www.google.com')
    """
    attrs: dict[str, str | None] = {"landing_url": url, "referrer": None, "referrer_domain": None}
    params: dict[str, list[str]] = {}
    if url:
        try:
            params = parse_qs(urlsplit(url).query)
        except ValueError:
            params = {}
    for name in UTM_FIELDS:
        values = params.get(name)
        attrs[name] = values[0][:255] if values and values[0] else None
    ref_host = _host(referrer)
    if ref_host and ref_host != _host(url):
        attrs["referrer"] = referrer
        attrs["referrer_domain"] = ref_host[:255]
    return attrs
