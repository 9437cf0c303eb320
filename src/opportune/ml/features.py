"""The one feature function: live journey state -> feature vector, for training and serving.

Training builds its examples by replaying stored visits through the same
:meth:`Ruleset.step` the pipeline runs and calling :func:`vector` after each event, so a
prefix's features in training are, by construction, what serving computes live (the
parity test checks it). The layout depends on the workspace (page groups, outcomes,
segments) and is kept with each model as its :class:`FeatureSpec`.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opportune.core.journey import Journey

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


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """The names, in order, of a model's features: the base set, then one per page group
    (views), per outcome (earlier visits that achieved it) and per segment (member now)."""

    page_groups: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [
            *BASE,
            *(f"group:{g}" for g in self.page_groups),
            *(f"past:{o}" for o in self.outcomes),
            *(f"segment:{s}" for s in self.segments),
        ]

    def to_json(self) -> dict[str, list[str]]:
        return {
            "pageGroups": list(self.page_groups),
            "outcomes": list(self.outcomes),
            "segments": list(self.segments),
        }

    @classmethod
    def from_json(cls, data: dict[str, Sequence[str]]) -> FeatureSpec:
        return cls(
            tuple(data.get("pageGroups", ())),
            tuple(data.get("outcomes", ())),
            tuple(data.get("segments", ())),
        )


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
    return out
