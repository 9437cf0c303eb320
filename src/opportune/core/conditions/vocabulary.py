"""The names a condition may use: event types, attributes, metrics, operators, limits.

>>> "scrollDepth" in METRICS, "utmSource" in SESSION_ATTRIBUTES, NUMBER_OPS
(True, True, ('gt', 'gte', 'lt', 'lte'))
"""

from __future__ import annotations

from typing import Final

from opportune.core.events import EVENT_TYPES as WIRE_EVENT_TYPES

# Event types a filter may name: the wire model's.
EVENT_TYPES: Final = frozenset(WIRE_EVENT_TYPES)
# Session attributes (fixed at the start of the visit) by their condition name.
SESSION_ATTRIBUTES: Final = frozenset(
    {
        "device",
        "browser",
        "os",
        "country",
        "region",
        "city",
        "locale",
        "timezone",
        "landingUrl",
        "referrer",
        "referrerDomain",
        "utmSource",
        "utmMedium",
        "utmCampaign",
        "utmTerm",
        "utmContent",
    }
)
# Attributes that change during the visit, and the event types that change them.
LIVE_ATTRIBUTES: Final[dict[str, frozenset[str]]] = {
    "currentUrl": frozenset({"page_view"}),
    "identified": frozenset({"identify"}),
}
# Metrics: name -> (event types that change it, whether it changes with time alone).
METRICS: Final[dict[str, tuple[frozenset[str] | None, bool]]] = {
    "events": (None, False),
    "pageViews": (frozenset({"page_view"}), False),
    "searches": (frozenset({"search"}), False),
    "clicks": (frozenset({"click"}), False),
    "formErrors": (frozenset({"form_error"}), False),
    "formsSubmitted": (frozenset({"form_submitted"}), False),
    "formsAbandoned": (frozenset({"form_abandoned"}), False),
    "idles": (frozenset({"idle"}), False),
    "customEvents": (frozenset({"custom"}), False),
    "scrollDepth": (frozenset({"scroll"}), False),
    "visitNumber": (frozenset(), False),
    "timeOnSite": (frozenset(), True),
    "timeOnPage": (frozenset({"page_view"}), True),
}
DURATION_METRICS: Final = frozenset({"timeOnSite", "timeOnPage"})
COUNTED: Final = {
    "pageViews": "page_view",
    "searches": "search",
    "clicks": "click",
    "formErrors": "form_error",
    "formsSubmitted": "form_submitted",
    "formsAbandoned": "form_abandoned",
    "idles": "idle",
    "customEvents": "custom",
}
TEXT_OPS: Final = (
    "equals",
    "notEquals",
    "in",
    "notIn",
    "contains",
    "startsWith",
    "endsWith",
    "regex",
    "glob",
)
NUMBER_OPS: Final = ("gt", "gte", "lt", "lte")
ALL_OPS: Final = (*TEXT_OPS, *NUMBER_OPS, "exists")
MAX_DEPTH: Final = 12
MAX_COUNT: Final = 1000
