"""The one feature function: live journey state -> feature vector, for training and serving.

Training builds its examples by replaying stored visits through the same
:meth:`Ruleset.step` the pipeline runs and calling :func:`vector` after each event, so a
prefix's features in training are, by construction, what serving computes live (the
parity test checks it). The layout depends on the workspace (page groups, outcomes,
segments) and is kept with each model as its :class:`FeatureSpec`; layout 2 adds the
current and landing page's group and the visit's words, which the journey counts in
hashed buckets as it folds each event (``core.journey.WORD_BUCKETS``).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opportune.core.journey import WORD_BUCKETS, Journey
from opportune.core.pages import PageGroup, PageGroups
from opportune.core.rules import Ruleset

DAY_MS = 86_400_000
_COUNTS = (
    ("events", None),
    ("page_views", "page_view"),
    ("searches", "search"),
    ("clicks", "click"),
    ("form_errors", "form_error"),
    ("forms_submitted", "form_submitted"),
    ("forms_abandoned", "form_abandoned"),
    ("idles", "idle"),
    ("custom_events", "custom"),
    ("viewports", "viewport"),
)
_DEVICES = ("desktop", "mobile", "tablet")
_BROWSERS = ("chrome", "safari", "firefox", "edge", "samsung")
_OSES = ("windows", "mac", "ios", "android", "linux")
_SEARCH = ("google.", "bing.", "duckduckgo.", "yahoo.", "ecosia.", "baidu.", "yandex.")
_SOCIAL = (
    "facebook.",
    "t.co",
    "twitter.",
    "x.com",
    "linkedin.",
    "instagram.",
    "reddit.",
    "tiktok.",
    "youtube.",
    "pinterest.",
)
_PAID = ("cpc", "ppc", "paid", "paid_social", "display", "paidsearch")
BASE = (
    *(name for name, _ in _COUNTS),
    "scroll_depth",
    "time_on_site_s",
    "dwell_s",
    "pages_per_minute",
    *(f"device_{d}" for d in _DEVICES),
    *(f"browser_{b}" for b in _BROWSERS),
    *(f"os_{o}" for o in _OSES),
    "referrer_search",
    "referrer_social",
    "referrer_other",
    "campaign",
    "campaign_paid",
    "campaign_email",
    "local_hour",
    "weekday",
    "returning",
    "visit_number",
    "days_since_last_visit",
    "identified",
)


# Layouts: 1 is the base set, page-group views, past outcomes, segments; 2 adds the
# current and the landing page's group and the visit's words (hashed). A model keeps the
# layout it was trained with, so an older model is still served its own vector.
LAYOUT = 2


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """The names, in order, of a model's features: the base set, then one per page group
    (views), per outcome (earlier visits that achieved it) and per segment (member now);
    from layout 2 on, the page groups of the current and of the landing page (so the
    groups' URL patterns are kept here, as trained) and one feature per word bucket.

    >>> spec = FeatureSpec(page_groups=("pricing",), outcomes=("signup",))
    >>> "group:pricing" in spec.names, FeatureSpec.from_json(spec.to_json()) == spec
    (True, True)
    """

    page_groups: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    page_urls: tuple[tuple[str, ...], ...] = ()  # per page group, its URL globs
    layout: int = LAYOUT

    @property
    def names(self) -> list[str]:
        names = [
            *BASE,
            *(f"group:{g}" for g in self.page_groups),
            *(f"past:{o}" for o in self.outcomes),
            *(f"segment:{s}" for s in self.segments),
        ]
        if self.layout >= 2:
            names += [f"page:{g}" for g in self.page_groups]
            names += [f"landing:{g}" for g in self.page_groups]
            names += [f"word:{i:02d}" for i in range(WORD_BUCKETS)]
        return names

    @property
    def pages(self) -> PageGroups:
        """The page groups as trained (matching memoised per URL, shared by equal specs)."""
        return _page_groups(self.page_groups, self.page_urls)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pageGroups": list(self.page_groups),
            "outcomes": list(self.outcomes),
            "segments": list(self.segments),
        }
        if self.layout >= 2:
            out["pageUrls"] = [list(u) for u in self.page_urls]
            out["layout"] = self.layout
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        """A saved layout; one saved before layouts were numbered is layout 1."""
        return cls(
            tuple(data.get("pageGroups", ())),
            tuple(data.get("outcomes", ())),
            tuple(data.get("segments", ())),
            tuple(tuple(u) for u in data.get("pageUrls", ())),
            int(data.get("layout", 1)),
        )


@functools.lru_cache(maxsize=64)
def _page_groups(names: tuple[str, ...], urls: tuple[tuple[str, ...], ...]) -> PageGroups:
    return PageGroups([PageGroup(n, u) for n, u in zip(names, urls, strict=False) if u])


@functools.lru_cache(maxsize=256)
def _zone(name: str | None) -> tzinfo:
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _flag(value: object, options: Sequence[str]) -> list[float]:
    text = str(value or "").casefold()
    return [1.0 if o in text else 0.0 for o in options]


def vector(journey: Journey, members: Collection[str], now: int, spec: FeatureSpec) -> list[float]:
    """The features of a visit at ``now`` (ms), ``members`` being its current segments."""
    j = journey
    counts = j.counts
    f = j.facts
    out = [float(sum(counts.values()))]
    out += [float(counts.get(t, 0)) for _, t in _COUNTS[1:]]
    on_site = max(0, now - j.started_at) / 1000.0
    pages = counts.get("page_view", 0)
    out += [
        float(j.scroll_depth),
        on_site,
        max(0, now - j.page_at) / 1000.0 if j.url is not None else 0.0,
        pages / max(on_site / 60.0, 0.5),
    ]
    device = f.get("device")
    out += [1.0 if device == d else 0.0 for d in _DEVICES]
    out += _flag(f.get("browser"), _BROWSERS)
    out += _flag(f.get("os"), _OSES)
    ref = str(f.get("referrerDomain") or "").casefold()
    search = any(s in ref for s in _SEARCH)
    social = not search and any(s in ref for s in _SOCIAL)
    out += [float(search), float(social), float(bool(ref) and not search and not social)]
    medium = str(f.get("utmMedium") or "").casefold()
    out += [
        float(any(f.get(k) for k in ("utmSource", "utmMedium", "utmCampaign"))),
        float(medium in _PAID),
        float(medium == "email"),
    ]
    tz = f.get("timezone")
    local = datetime.fromtimestamp(now / 1000, _zone(tz if isinstance(tz, str) else None))
    out += [float(local.hour), float(local.weekday())]
    out += [
        float(j.visit_number > 1),
        float(j.visit_number),
        (j.started_at - j.previous_visit_at) / DAY_MS if j.previous_visit_at else -1.0,
        float(bool(f.get("identified")) or counts.get("identify", 0) > 0),
    ]
    out += [float(j.groups.get(g, 0)) for g in spec.page_groups]
    out += [float(j.past_outcomes.get(o, 0)) for o in spec.outcomes]
    out += [1.0 if s in members else 0.0 for s in spec.segments]
    if spec.layout >= 2:
        pages = spec.pages
        here = pages.of(j.url)
        out += [1.0 if g in here else 0.0 for g in spec.page_groups]
        landing = f.get("landingUrl")
        came = pages.of(landing) if isinstance(landing, str) else ()
        out += [1.0 if g in came else 0.0 for g in spec.page_groups]
        words = [0.0] * WORD_BUCKETS
        for b, c in j.words.items():
            words[b] = float(c)
        out += words
    return out


def spec_for(ruleset: Ruleset) -> FeatureSpec:
    """The feature layout for a workspace's rules: its page groups, outcomes and segments,
    sorted by name so that the layout does not change when documents are reordered."""
    groups = sorted(ruleset.pages.groups, key=lambda g: g.name)
    return FeatureSpec(
        tuple(g.name for g in groups),
        tuple(sorted(ruleset.outcome_by_name)),
        tuple(sorted(ruleset.segment_by_name)),
        tuple(tuple(g.urls) for g in groups),
    )
