"""Which site a key names at a given moment: current keys always, previous keys (a
rotation in progress) until their ``validUntil``.

>>> from opportune.workspace.documents import Site
>>> site = Site.model_validate({"name": "shop", "key": "new-key-2027", "origins": ["*"],
...     "previousKeys": [{"key": "old-key-2026", "validUntil": "2027-01-31T00:00:00Z"}]})
>>> keys = SiteKeys([site])
>>> keys.find("new-key-2027", now_ms=0).name, keys.find("old-key-2026", now_ms=0).name
('shop', 'shop')
>>> keys.find("old-key-2026", now_ms=1_900_000_000_000)  # in 2030
Expired(site='shop', until_ms=1801353600000)
>>> keys.find("nobody", now_ms=0) is None
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from opportune.workspace.documents import Site


class Expired(NamedTuple):
    """A previous key of ``site`` used after its rotation ended."""

    site: str
    until_ms: int


class SiteKeys:
    """The sites by key: the current ones in a dict (the hot path's one lookup), the
    previous ones beside, consulted only when that misses."""

    def __init__(self, sites: Iterable[Site]) -> None:
        sites = list(sites)
        self.current: dict[str, Site] = {s.key: s for s in sites}
        self.previous: dict[str, tuple[Site, int]] = {
            k.key: (s, k.valid_until_ms) for s in sites for k in s.previous_keys
        }

    def find(self, key: str, *, now_ms: int) -> Site | Expired | None:
        """The site ``key`` names at ``now_ms``; ``Expired`` for a previous key past its
        time; None for a key no site has had."""
        site = self.current.get(key)
        if site is not None:
            return site
        found = self.previous.get(key)
        if found is None:
            return None
        if now_ms < found[1]:
            return found[0]
        return Expired(found[0].name, found[1])

    def get(self, key: str, now_ms: int) -> Site | None:
        """The site, or None for an unknown or expired key."""
        found = self.find(key, now_ms=now_ms)
        return found if isinstance(found, Site) else None
