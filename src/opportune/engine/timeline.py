"""A visit's timeline for a person: each recorded fact (a page, a search, a form, an offer
and what became of it, a segment entered or left, an outcome reached) as one item with a
stable id, its time, its kind, the facts it carries and a sentence saying it.

The texts are plain data: visitor-supplied words (queries, titles, labels) are quoted as
they came, and the page renders every one with ``textContent``.

>>> items = timeline_items(Facts(
...     events=[{"event_id": "e1", "ts": 5, "received_at": 6, "seq": 0, "type": "search",
...              "url": None, "name": None, "query": "mortgage", "title": None, "data": None}],
...     actions=[], segments=[], outcomes=[]))
>>> items[0]["id"], items[0]["text"]
('e:e1', "searched for 'mortgage'")
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any, Final
from urllib.parse import urlsplit

from opportune.ml.outcomes.reasons import human
from opportune.store.timeline import Facts

_OFFER_STATES: Final = {
    "qualified": "qualified for {map}",
    "holdout": "held out of {map} (control group)",
    "blocked": "{map} blocked",
    "offered": "was offered {map}",
    "accepted": "accepted {map}",
    "rejected": "turned down {map}",
    "timeout": "{map} timed out unanswered",
    "ignored": "ignored {map}",
    "started": "started {map}",
    "engaged": "engaged with {map}",
    "abandoned": "abandoned {map}",
    "completed": "{map} completed",
    "errored": "{map} failed",
}


def _quote(text: str | None, limit: int = 120) -> str:
    t = " ".join((text or "").split())
    return "'" + (t if len(t) <= limit else t[: limit - 1] + "…") + "'"


def _page_name(url: str | None, title: str | None) -> str:
    if title:
        return _quote(title)
    if not url:
        return "a page"
    parts = urlsplit(url)
    return _quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))


def _event_text(e: Mapping[str, Any]) -> str:
    kind, name = e["type"], e.get("name")
    raw = e.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    form = f"the {human(name)} form" if name else "a form"
    if kind == "page_view":
        return f"viewed {_page_name(e.get('url'), e.get('title'))}"
    if kind == "search":
        return f"searched for {_quote(e.get('query'))}"
    if kind == "click":
        return f"clicked {_quote(name)}" if name else "clicked"
    if kind == "form_submitted":
        return f"submitted {form}"
    if kind == "form_abandoned":
        return f"left {form} unfinished"
    if kind == "form_error":
        detail = [str(data[k]) for k in ("field", "code", "message") if data.get(k)]
        return f"error on {form}" + (f" ({', '.join(detail)})" if detail else "")
    if kind == "idle":
        return "went idle"
    if kind == "identify":
        return "signed in / identified"
    return human(name or kind)


def _event_item(e: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"e:{e['event_id']}",
        "at": e["ts"],
        "kind": e["type"],
        "text": _event_text(e),
    }
    for key in ("url", "title", "name", "query"):
        if e.get(key):
            item[key] = e[key]
    data = e.get("data")
    if isinstance(data, dict) and data and e["type"] != "identify":
        item["attributes"] = data
    return item


def _action_item(a: Mapping[str, Any], map_titles: Mapping[str, str]) -> dict[str, Any]:
    title = map_titles.get(a["map"]) or human(a["map"])
    text = _OFFER_STATES.get(a["state"], "{map}: " + str(a["state"])).format(map=_quote(title))
    if a.get("reason"):
        text += f" — {a['reason']}"
    return {
        "id": f"a:{a['id']}",
        "at": a["at"],
        "kind": "offer",
        "map": a["map"],
        "state": a["state"],
        "reason": a.get("reason"),
        "instance": a["instance_id"],
        "text": text,
    }


def _segment_item(s: Mapping[str, Any]) -> dict[str, Any]:
    verb = {"entered": "entered", "left": "left", "assigned": "assigned to"}.get(
        s["change"], s["change"]
    )
    return {
        "id": f"s:{s['id']}",
        "at": s["at"],
        "kind": "segment",
        "segment": s["segment"],
        "change": s["change"],
        "text": f"{verb} the segment {_quote(human(s['segment']))}",
    }


def _outcome_item(o: Mapping[str, Any]) -> dict[str, Any]:
    value = o.get("value")
    return {
        "id": f"o:{o['outcome']}",
        "at": o["achieved_at"],
        "kind": "outcome",
        "outcome": o["outcome"],
        "value": value,
        "text": f"reached {_quote(human(o['outcome']))}"
        + (f" (value {value:g})" if isinstance(value, int | float) else ""),
    }


def timeline_items(
    facts: Facts, *, map_titles: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every fact of ``facts`` as a timeline item, oldest first (ties keep the order the
    facts were recorded in: the event, then what it led to)."""
    titles = map_titles or {}
    items = [_event_item(e) for e in facts.events]
    items += [_action_item(a, titles) for a in facts.actions]
    items += [_segment_item(s) for s in facts.segments]
    items += [_outcome_item(o) for o in facts.outcomes]
    order = {"e": 0, "s": 1, "o": 2, "a": 3}
    items.sort(key=lambda i: (i["at"], order[i["id"][0]]))
    pages = [i for i in items if i["kind"] == "page_view"]
    for page, after in pairwise(pages):
        page["durationMs"] = after["at"] - page["at"]  # the last page's time is still running
    return items
