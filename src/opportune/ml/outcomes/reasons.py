"""Why a score is what it is, in words a person understands: each model feature named with
what the visit did ("searched for 'mortgage'", "on the loan form page for 2 min", "came
from a Google campaign 'spring'"), never the model's own names (``word:31``, ``local_hour``).

A hashed word bucket cannot be turned back into a word on its own; the visit's own texts
(its searches, clicked labels, page addresses) are hashed again word by word and the ones
that land in the bucket are quoted. Pure functions: the texts are handed in.

>>> from opportune.core.journey import Journey
>>> j = Journey("s", 0, visit_number=3, facts={"utmSource": "google", "utmCampaign": "spring"})
>>> reason("visit_number", 3.0, j)
'3rd visit'
>>> reason("campaign", 1.0, j)
"came from a Google campaign 'spring'"
>>> reason(word_feature("mortgage"), 1.0, j, texts=[VisitText("search", "Mortgage rates")])
"searched for 'Mortgage rates'"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from opportune.core.journey import Journey, JourneyEvent, word_buckets

_COUNTED: Final = {
    "events": ("did nothing yet", "did {n} thing{s} on the site"),
    "page_views": ("viewed no page yet", "viewed {n} page{s}"),
    "searches": ("did not search", "searched {n} time{s}"),
    "clicks": ("clicked nothing", "clicked {n} time{s}"),
    "form_errors": ("had no form errors", "{n} error{s} on forms"),
    "forms_submitted": ("submitted no form", "submitted {n} form{s}"),
    "forms_abandoned": ("left no form unfinished", "left {n} form{s} unfinished"),
    "idles": ("never went idle", "went idle {n} time{s}"),
    "custom_events": ("no site-specific actions", "{n} site-specific action{s}"),
    "viewports": ("did not resize the window", "resized the window {n} time{s}"),
}
# The event type of each counted feature, to name the form of a form feature.
_TYPE_OF: Final = {
    "form_errors": "form_error",
    "forms_submitted": "form_submitted",
    "forms_abandoned": "form_abandoned",
}
_BRANDS: Final = {
    "google": "Google",
    "bing": "Bing",
    "facebook": "Facebook",
    "linkedin": "LinkedIn",
    "instagram": "Instagram",
    "twitter": "Twitter",
    "tiktok": "TikTok",
    "youtube": "YouTube",
    "newsletter": "newsletter",
    "email": "email",
}
_WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_QUOTE_MAX: Final = 60
_LETTERS: Final = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True, slots=True)
class VisitText:
    """A text of the visit whose words the journey counts: a search's query (``search``),
    a clicked element's label (``click``) or a page address's parameter value (``url``)."""

    kind: str
    text: str


def texts_of(events: Iterable[JourneyEvent]) -> list[VisitText]:
    """The texts of a visit's events, in order, as ``core.journey.fold`` counts them.

    >>> texts_of([JourneyEvent("search", 1, query="loan"), JourneyEvent("idle", 2)])
    [VisitText(kind='search', text='loan')]
    """
    out: list[VisitText] = []
    for e in events:
        if e.type == "search" and e.query:
            out.append(VisitText("search", e.query))
        elif e.type == "click" and e.name:
            out.append(VisitText("click", e.name))
        elif e.type == "page_view" and e.url and "?" in e.url:
            out += [VisitText("url", v) for v in _url_values(e.url)]
    return out


def _url_values(url: str) -> list[str]:
    try:
        params = parse_qsl(urlsplit(url).query)
    except ValueError:
        return []
    return [
        v
        for k, v in params
        if not k.casefold().startswith("utm_")
        and not k.casefold().endswith("clid")
        and not any(c.isdigit() for c in v)
    ]


def word_feature(word: str) -> str:
    """The feature name of the bucket ``word`` falls in (for tests and examples)."""
    return f"word:{word_buckets(word)[0]:02d}"


def human(name: str) -> str:
    """A rule's or page group's name as words: ``loan-form`` -> ``loan form``."""
    return name.replace("_", " ").replace("-", " ").strip()


def ordinal(n: int) -> str:
    """``3`` -> ``3rd``.

    >>> [ordinal(i) for i in (1, 2, 3, 4, 11, 12, 13, 21, 22)]
    ['1st', '2nd', '3rd', '4th', '11th', '12th', '13th', '21st', '22nd']
    """
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}" + {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def duration(seconds: float) -> str:
    """A number of seconds as a person says it.

    >>> [duration(s) for s in (5, 59.4, 60, 125, 3600, 3905)]
    ['5 s', '59 s', '1 min', '2 min', '1 h', '1 h 5 min']
    """
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    h, m = divmod(s // 60, 60)
    return f"{h} h" + (f" {m} min" if m else "")


def _quote(text: str) -> str:
    t = " ".join(text.split())
    return "'" + (t if len(t) <= _QUOTE_MAX else t[: _QUOTE_MAX - 1] + "…") + "'"


def _plural(template: str, n: float) -> str:
    k = int(n)
    return template.format(n=k, s="" if k == 1 else "s")


def _brand(source: str) -> str:
    key = source.casefold().split(".")[0]
    return _BRANDS.get(key, source)


def _words(bucket: int, texts: Sequence[VisitText]) -> list[VisitText]:
    """The visit's texts holding a word that falls in ``bucket`` (each text once)."""
    return [t for t in texts if bucket in word_buckets(t.text)]


def vocabulary(texts: Iterable[str]) -> dict[int, list[str]]:
    """The words of ``texts`` (a workspace's rules: the words it cares about) by bucket,
    to name a bucket the visit itself has no word in.

    >>> vocabulary(["mortgage"])[int(word_feature("mortgage")[5:])]
    ['mortgage']
    """
    out: dict[int, list[str]] = {}
    for text in texts:
        for word in _LETTERS.findall(text.casefold()):
            bucket = word_buckets(word)
            if len(bucket) != 1:  # too short or too long to be counted as a word
                continue
            found = out.setdefault(bucket[0], [])
            if word not in found:
                found.append(word)
    return out


def _word_reason(
    bucket: int, value: float, texts: Sequence[VisitText], known: Mapping[int, list[str]]
) -> str:
    like = " or ".join(_quote(w) for w in known.get(bucket, [])[:3])
    where = "in searches, clicks or page addresses"
    if value <= 0:
        return (
            f"no words like {like} {where}"
            if like
            else "no search, click or page address with certain words that matter"
        )
    found = _words(bucket, texts)
    if not found:
        return (
            f"used words like {like} {where}"
            if like
            else "a search, click or page address with words that matter"
        )
    parts = []
    for kind, verb in (
        ("search", "searched for"),
        ("click", "clicked on"),
        ("url", "opened a page about"),
    ):
        said = list(dict.fromkeys(_quote(t.text) for t in found if t.kind == kind))
        if said:
            parts.append(f"{verb} {' and '.join(said[:3])}")
    return "; ".join(parts)


def _forms(journey_type: str, events: Sequence[JourneyEvent]) -> list[str]:
    return list(dict.fromkeys(human(e.name) for e in events if e.type == journey_type and e.name))


def _counted(feature: str, value: float, events: Sequence[JourneyEvent]) -> str:
    none, some = _COUNTED[feature]
    if value <= 0:
        return none
    forms = _forms(_TYPE_OF[feature], events) if feature in _TYPE_OF else []
    if not forms:
        return _plural(some, value)
    which = " and ".join(f"the {f} form" for f in forms[:2])
    if feature == "form_errors":
        return _plural("{n} error{s} on ", value) + which
    verb = "submitted" if feature == "forms_submitted" else "left"
    tail = " unfinished" if feature == "forms_abandoned" else ""
    return f"{verb} {which}{tail}"


def _page_here(journey: Journey, groups: Sequence[str]) -> str:
    if groups:
        return f"the {human(groups[0])} page"
    if journey.url:
        path = urlsplit(journey.url).path or "/"
        return f"the page {_quote(path)}"
    return "this page"


def _visit(feature: str, value: float, j: Journey) -> str | None:
    """The features of the visit as a whole: its number, the one before, who it is."""
    if feature == "returning":
        return "returning visitor" if value > 0 else "first visit"
    if feature == "visit_number":
        return f"{ordinal(int(value))} visit" if value > 1 else "first visit"
    if feature == "days_since_last_visit":
        if value < 0:
            return "first visit"
        if value < 1:
            hours = int(value * 24)
            return "was here earlier today" if hours < 1 else f"last visit {hours} h ago"
        days = int(value)
        return f"last visit {days} day{'s' if days != 1 else ''} ago"
    if feature == "identified":
        return "signed in (known customer)" if value > 0 else "not signed in"
    return None


def _source(feature: str, value: float, j: Journey) -> str | None:
    """Where the visit came from: a search engine, a social site, a campaign."""
    f = j.facts
    ref = str(f.get("referrerDomain") or "")
    source = str(f.get("utmSource") or "")
    name = str(f.get("utmCampaign") or "")
    named = f" {_quote(name)}" if name else ""
    if feature.startswith("referrer_"):
        kind = {"search": "a search engine", "social": "a social site", "other": "another site"}
        what = kind[feature.removeprefix("referrer_")]
        if value <= 0:
            return f"did not come from {what}"
        return f"came from {what}" + (f" ({ref})" if ref else "")
    if feature == "campaign":
        if value <= 0:
            return "did not come from a campaign"
        return f"came from a {_brand(source) + ' ' if source else ''}campaign{named}"
    if feature == "campaign_paid":
        if value <= 0:
            return "not from a paid campaign"
        return f"came from a paid {_brand(source) + ' ' if source else ''}ad{named}".strip()
    if feature == "campaign_email":
        return f"came from an email campaign{named}" if value > 0 else "not from an email"
    return None


_THINGS: Final = {
    "device_desktop": "a computer",
    "device_mobile": "a mobile",
    "device_tablet": "a tablet",
    "os_ios": "iOS",
    "os_mac": "a Mac",
    "os_windows": "Windows",
    "os_android": "Android",
    "os_linux": "Linux",
}


def _device(feature: str, value: float) -> str | None:
    for prefix, verb in (("device_", "on"), ("browser_", "using"), ("os_", "on")):
        if feature.startswith(prefix):
            thing = _THINGS.get(feature) or feature.removeprefix(prefix).title()
            return f"{verb} {thing}" if value > 0 else f"not {verb} {thing}"
    return None


def _time(feature: str, value: float, j: Journey, groups: Sequence[str]) -> str | None:
    if feature == "time_on_site_s":
        return f"on the site for {duration(value)}"
    if feature == "dwell_s":
        return f"on {_page_here(j, groups)} for {duration(value)}"
    if feature == "pages_per_minute":
        return f"{value:.1f} pages a minute"
    if feature == "scroll_depth":
        return f"scrolled {int(value)}% down the page" if value > 0 else "did not scroll"
    if feature == "local_hour":
        return f"visiting at {int(value):02d}:00 local time"
    if feature == "weekday":
        return f"visiting on a {_WEEKDAYS[int(value) % 7]}"
    return None


def _named(feature: str, value: float, j: Journey) -> str | None:
    """Features named after the workspace's page groups, outcomes and segments."""
    kind, _, name = feature.partition(":")
    what = human(name)
    if kind == "group":
        n = int(value)
        return f"viewed {n} {what} page{'s' if n != 1 else ''}" if n else f"no {what} page"
    if kind == "past":
        n = int(value)
        if not n:
            return f"never reached {what} before"
        return f"reached {what} in {n} earlier visit{'s' if n != 1 else ''}"
    if kind == "segment":
        return f"in the segment {what}" if value > 0 else f"not in the segment {what}"
    if kind == "page":
        return f"on a {what} page now" if value > 0 else f"not on a {what} page"
    if kind == "landing":
        return f"landed on a {what} page" if value > 0 else f"did not land on a {what} page"
    return None


def reason(
    feature: str,
    value: float | None,
    journey: Journey,
    *,
    texts: Sequence[VisitText] = (),
    events: Sequence[JourneyEvent] = (),
    page_groups: Sequence[str] = (),
    known: Mapping[int, list[str]] | None = None,
) -> str:
    """``feature`` (a model's feature name) at ``value`` in ``journey``, in words.

    ``texts`` are the visit's texts (for word buckets), ``events`` its events (for the
    names of forms), ``page_groups`` the groups of the current page (for the time on it),
    ``known`` the workspace's words by bucket (:func:`vocabulary`) for a bucket the visit
    has no word in.
    A feature this function does not know is said as "<name>: <value>", never dropped.
    """
    v = float(value) if value is not None else 0.0
    if feature in _COUNTED:
        return _counted(feature, v, events)
    if feature.startswith("word:") and feature[5:].isdigit():
        return _word_reason(int(feature[5:]), v, texts, known or {})
    for found in (
        _visit(feature, v, journey),
        _source(feature, v, journey),
        _device(feature, v),
        _time(feature, v, journey, page_groups),
        _named(feature, v, journey),
    ):
        if found is not None:
            return found
    return f"{human(feature)}: {value:g}" if value is not None else human(feature)


def reasons(
    why: Sequence[Mapping[str, Any]],
    journey: Journey,
    *,
    texts: Sequence[VisitText] = (),
    events: Sequence[JourneyEvent] = (),
    page_groups: Sequence[str] = (),
    known: Mapping[int, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """Each ``{feature, value, contribution}`` of an explanation with its ``text`` beside;
    the other fields are kept as they are (the public API's)."""
    return [
        {
            **w,
            "text": reason(
                str(w.get("feature")),
                w.get("value"),
                journey,
                texts=texts,
                events=events,
                page_groups=page_groups,
                known=known,
            ),
        }
        for w in why
    ]
