"""Server-side enrichment of a visit: device, browser and OS from the user agent; geo.

User agents are parsed with ua-parser (the maintained uap-core rules, with its native
accelerator) and cached, since a site sees far fewer distinct user agents than requests.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ua_parser import parse

_TABLETS = ("iPad", "Kindle", "Nexus 7", "Nexus 9", "Nexus 10", "Galaxy Tab", "SM-T", "Tablet")


@dataclass(frozen=True, slots=True)
class Device:
    device_type: str  # desktop | mobile | tablet | bot | other
    browser: str | None
    os: str | None


@lru_cache(maxsize=4096)
def parse_user_agent(ua: str) -> Device:
    """Classify a user agent string.

    >>> parse_user_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
    ...   "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
    Device(device_type='mobile', browser='Mobile Safari', os='iOS')
    """
    if not ua:
        return Device("other", None, None)
    result = parse(ua)
    browser = result.user_agent.family if result.user_agent else None
    os_name = result.os.family if result.os else None
    family = result.device.family if result.device else "Other"
    if family == "Spider" or "bot" in ua.lower():
        kind = "bot"
    elif any(t in ua for t in _TABLETS) or ("Android" in ua and "Mobile" not in ua):
        kind = "tablet"
    elif "Mobi" in ua or family in ("iPhone", "iPod"):
        kind = "mobile"
    elif os_name in ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "FreeBSD"):
        kind = "desktop"
    else:
        kind = "other"
    return Device(kind, browser, os_name)


@dataclass(frozen=True, slots=True)
class Geo:
    country: str | None = None
    region: str | None = None
    city: str | None = None


class GeoResolver:
    """Geo from a trusted proxy's headers (CDNs set these), else an optional GeoIP file.

    Headers are trusted only when the operator says a proxy sets them, since any client
    could send them otherwise.
    """

    COUNTRY_HEADERS = ("cf-ipcountry", "x-geo-country", "cloudfront-viewer-country")
    REGION_HEADERS = ("x-geo-region", "cloudfront-viewer-country-region")
    CITY_HEADERS = ("x-geo-city", "cloudfront-viewer-city")

    def __init__(self, *, trust_headers: bool, mmdb_path: Path | None) -> None:
        self.trust_headers = trust_headers
        self._reader: Any = None
        if mmdb_path is not None:
            import maxminddb

            self._reader = maxminddb.open_database(str(mmdb_path))

    def client_ip(self, headers: dict[str, str], peer: str | None) -> str | None:
        if self.trust_headers:
            fwd = headers.get("x-forwarded-for")
            if fwd:
                return fwd.split(",")[0].strip()
        return peer

    def resolve(self, headers: dict[str, str], peer: str | None) -> Geo:
        if self.trust_headers:
            country = _first(headers, self.COUNTRY_HEADERS)
            if country and len(country) == 2 and country.isalpha() and country.upper() != "XX":
                return Geo(
                    country.upper(),
                    (_first(headers, self.REGION_HEADERS) or None),
                    (_first(headers, self.CITY_HEADERS) or None),
                )
        if self._reader is None:
            return Geo()
        ip = self.client_ip(headers, peer)
        try:
            addr = ipaddress.ip_address(ip or "")
        except ValueError:
            return Geo()
        if addr.is_private or addr.is_loopback:
            return Geo()
        rec = self._reader.get(str(addr)) or {}
        country = (rec.get("country") or {}).get("iso_code")
        subdivisions = rec.get("subdivisions") or [{}]
        region = (subdivisions[0].get("names") or {}).get("en")
        city = ((rec.get("city") or {}).get("names") or {}).get("en")
        return Geo(country, region, city)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def _first(headers: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:
            return value.strip()[:128]
    return None
