"""Page groups: named sets of the site's pages (product, pricing, help, cart, form steps),
defined by URL globs in the workspace; outcome models count page views per group."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_MEMO_MAX = 4096


@dataclass(frozen=True, slots=True)
class PageGroup:
    name: str
    urls: tuple[str, ...]  # globs over the whole URL, case-insensitive: "*/demo/apply.html*"


@dataclass(slots=True)
class PageGroups:
    """Which groups a URL belongs to (a URL may be in several), memoised per URL."""

    groups: Sequence[PageGroup] = ()
    _patterns: list[tuple[str, re.Pattern[str]]] = field(default_factory=list, repr=False)
    _memo: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._patterns = [
            (g.name, re.compile("|".join(fnmatch.translate(u) for u in g.urls), re.IGNORECASE))
            for g in self.groups
        ]

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def of(self, url: str | None) -> tuple[str, ...]:
        """The groups of ``url``.

        >>> PageGroups([PageGroup("help", ("*/help*",))]).of("https://b.com/Help/x")
        ('help',)
        """
        if not url or not self._patterns:
            return ()
        hit = self._memo.get(url)
        if hit is None:
            hit = tuple(name for name, p in self._patterns if p.match(url))
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[url] = hit
        return hit
