"""Placement of a batch's events in visits: the session rows they update, and what a visit
learns when it starts (device, geo, locale) or lands (landing page, UTM, referrer).

The session a timestamp belongs to is decided in ``core.session.place``; this module keeps
the rows the writer will upsert in step with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opportune.core.events import Context, Event
from opportune.core.session import landing_attributes
from opportune.engine.enrichment import Device, Geo, GeoResolver, parse_user_agent


@dataclass(slots=True)
class Arrival:
    """Where a batch came from: parsed at most once, and only if a visit starts in it.

    >>> from opportune.engine.enrichment import GeoResolver
    >>> geo = GeoResolver(trust_headers=False, mmdb_path=None)
    >>> a = Arrival({"user-agent": "curl/8"}, None, geo)
    >>> a.device_and_geo()[0] is a.device_and_geo()[0]
    True
    """

    headers: Mapping[str, str]
    peer: str | None
    resolver: GeoResolver
    _seen: tuple[Device, Geo] | None = field(default=None, repr=False)

    def device_and_geo(self) -> tuple[Device, Geo]:
        if self._seen is None:
            device = parse_user_agent(self.headers.get("user-agent", "")[:512])
            self._seen = (device, self.resolver.resolve(dict(self.headers), self.peer))
        return self._seen


def start_visit(
    row: dict[str, Any], *, number: int, ts: int, arrival: Arrival, context: Context
) -> None:
    """Fill a new visit's row with what its first batch says about the device and place."""
    device, geo = arrival.device_and_geo()
    row.update(
        _new=True,
        number=number,
        started_at=ts,
        device_type=device.device_type,
        browser=device.browser and device.browser[:64],
        os=device.os and device.os[:64],
        country=geo.country,
        region=geo.region and geo.region[:64],
        city=geo.city and geo.city[:128],
        locale=context.locale,
        timezone=context.timezone,
    )


def count_event(row: dict[str, Any], ev: Event, ts: int, *, new: bool) -> bool:
    """Count the event into its visit's row; True if it is the visit's landing page view."""
    row["event_count"] += 1
    row["last_event_at"] = max(row["last_event_at"], ts)
    row["started_at"] = min(row["started_at"], ts)
    if ev.type != "page_view":
        return False
    row["page_count"] += 1
    if row["landing_url"] is None and (new or row.get("_new")):
        row.update(landing_attributes(ev.url, ev.referrer))
        return True
    return False
