"""The agent's context panel for one conversation: who the visitor is, what they did in this
visit (a timeline the page follows with a cursor), their outcome scores with why in words,
their earlier visits and conversations, the bot's part, and why this agent got the chat.

Everything is read from the stores and the live state; nothing is written. The scores are
the live journey's (they are not stored); the rest is the database's, so any server process
answers the same. ``cursor`` is the moment of the read: the next read with ``since`` returns
what was recorded from ``SINCE_MARGIN_MS`` before it (a write in flight at the first read
lands in the second), and the page drops the item ids it already shows.

>>> cursor_of(1_700_000_000_000), since_ms(cursor_of(1_700_000_000_000))
('1700000000000', 1699999990000)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Engine

from opportune.core.events import EVENT_TYPES
from opportune.core.journey import Journey, JourneyEvent
from opportune.core.pages import PageGroups
from opportune.engine.timeline import timeline_items
from opportune.ml.outcomes.reasons import human, reasons, texts_of, vocabulary
from opportune.store import conversations as conv_store
from opportune.store import facts as facts_store
from opportune.store import interactions as interactions_store
from opportune.store import journeys, timeline
from opportune.workspace import Workspace

if TYPE_CHECKING:
    from opportune.engine.ingest import Ingestor
    from opportune.engine.rules import RuleBook
    from opportune.engine.scoring import OutcomeScorer

SINCE_MARGIN_MS: Final = 10_000
PAST_LIMIT: Final = 10
WEEK_MS: Final = 7 * 86_400_000
_NOT_WORDS: Final = frozenset({"attribute", "metric", "type", "scope", "score", "field"})
_DONE = ("closed", "abandoned")


class BadSince(ValueError):
    """A ``since`` that is not a cursor this module gave out."""


def cursor_of(now_ms: int) -> str:
    return str(int(now_ms))


def since_ms(cursor: str | None) -> int:
    """The moment to read from for a ``since`` cursor (0: the whole visit)."""
    if not cursor:
        return 0
    if not cursor.isdigit() or len(cursor) > 16:
        raise BadSince("since: not a cursor this API gave out")
    return max(0, int(cursor) - SINCE_MARGIN_MS)


def visit_events(engine: Engine, session_id: str) -> list[JourneyEvent]:
    """A stored visit's events in the order they were processed (empty if unknown)."""
    with engine.connect() as conn:
        found = facts_store.session_history(conn, session_id)
    return found[1] if found is not None else []


def scores_in_words(
    scorer: OutcomeScorer,
    journey: Journey,
    members: Mapping[str, int],
    now: int,
    *,
    events: Sequence[JourneyEvent],
    pages: PageGroups | None = None,
    known: Mapping[int, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """Each outcome's scores with the features weighing most in it, each said in words
    (``text``) from the visit's own events (``known``: the rules' words by bucket, see
    :func:`rule_words`); the fields of ``explain`` are kept."""
    if not journey.scores:
        return []
    why = scorer.explain(journey, members, now)
    texts = texts_of(events)
    here = pages.of(journey.url) if pages is not None else ()
    out = []
    for name, s in journey.scores.items():
        said = reasons(
            why.get(name, []), journey, texts=texts, events=events, page_groups=here, known=known
        )
        out.append({"outcome": name, **s.to_json(), "why": said})
    return out


def rule_words(rules: RuleBook) -> dict[int, list[str]]:
    """The words the workspace's rules look for (the texts their conditions compare, the
    rules' and page groups' names) by word bucket: what a bucket stands for when the visit
    has none of its words. Descriptions, field names and addresses are left out."""
    texts = [g.name for g in rules.ruleset.pages.groups]
    for kind in ("segment", "outcome", "actionMap"):
        for doc, _ in rules.docs(kind):
            texts.append(doc.name)
            texts += _strings(getattr(doc, "condition", None) or getattr(doc, "trigger", None))
    return vocabulary(texts)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        plain = "/" not in value and "*" not in value and value not in EVENT_TYPES
        return [value] if plain else []
    if isinstance(value, dict):  # the names of attributes and metrics are not words
        return [s for k, v in value.items() if k not in _NOT_WORDS for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


async def conversation_context(
    ingestor: Ingestor,
    rules: RuleBook,
    workspace: Workspace,
    conversation_id: str,
    *,
    now_ms: int,
    since: str | None = None,
) -> dict[str, Any]:
    """The context panel's JSON for a conversation (see docs/agent-workspace.md);
    ``conv_store.NotFound`` if there is none, :class:`BadSince` for a bad cursor."""
    start = since_ms(since)
    engine = ingestor.engine
    read = await asyncio.to_thread(_read, engine, workspace, conversation_id, now_ms, start)
    conv, visit = read["_conv"], read["_visit"]
    journey, members = await _live_journey(ingestor, rules, conv.visitor_id, now_ms)
    scores: list[dict[str, Any]] = []
    if journey is not None and visit is not None and journey.session_id == visit["id"]:
        events = await asyncio.to_thread(visit_events, engine, journey.session_id)
        at = max(journey.last_at, journey.started_at)
        scores = scores_in_words(
            ingestor.scorer,
            journey,
            members,
            at,
            events=events,
            pages=rules.ruleset.pages,
            known=rule_words(rules),
        )
    labels = {o: _outcome_label(workspace, o) for o in (s["outcome"] for s in scores)}
    for s in scores:
        s["label"] = labels[s["outcome"]]
    read["scores"] = scores
    read["segments"] = [{"name": n, "label": human(n), "since": t} for n, t in members.items()]
    del read["_conv"], read["_visit"]
    return read


def _outcome_label(workspace: Workspace, name: str) -> str:
    doc = workspace.outcomes.get(name)
    desc = getattr(doc, "description", "") if doc is not None else ""
    return desc or human(name)


async def _live_journey(
    ingestor: Ingestor, rules: RuleBook, visitor_id: str, now_ms: int
) -> tuple[Journey | None, dict[str, int]]:
    """The visitor's current journey as the live state holds it (rebuilt if the rules
    changed) and the segments they are in now."""
    state = await ingestor.live.peek(visitor_id, now_ms)
    if state is None:
        return None, {}
    rs = rules.ruleset
    j = state.journey
    if j is not None and not j.is_current(rs.fingerprint) and rs:
        j = await asyncio.to_thread(ingestor.rebuild_journey, visitor_id, state)
    current = j is not None and j.session_id == state.track.session_id
    members = rs.members(j if current else None, state.assignments, now_ms)
    return (j if current else None), members


def _read(
    engine: Engine, workspace: Workspace, conversation_id: str, now_ms: int, start: int
) -> dict[str, Any]:
    """Everything the database holds for the panel, in one connection."""
    with engine.connect() as conn:
        conv = conv_store.get(conn, conversation_id)
        at = conv.ended_at if conv.state in _DONE else None
        visit = timeline.visit_of(conn, conv.visitor_id, at_ms=at)
        facts = timeline.facts_since(conn, visit, since_ms=start) if visit else None
        out: dict[str, Any] = {
            "conversation": _conversation(conv, workspace),
            "cursor": cursor_of(now_ms),
            "since": start or None,
            "visit": _visit(visit, now_ms),
            "timeline": timeline_items(facts) if facts else [],
            "_conv": conv,
            "_visit": visit,
        }
        if start:  # a refresh: only what moves
            out["routing"] = _routing(conn, conv, workspace)
            return out
        out["who"] = _who(conn, conv, visit)
        devices = [conv.visitor_id]
        if out["who"]["customerId"]:  # every device of the customer, once identified
            devices = timeline.visitors_of(conn, out["who"]["customerId"]) or devices
        before = visit["started_at"] if visit else now_ms + 1
        out["who"]["visitsLast7Days"] = timeline.visit_count(
            conn, visitor_ids=devices, from_ms=before - WEEK_MS, to_ms=before
        )
        out["pastSessions"] = [
            _past_session(v)
            for v in timeline.earlier_visits(conn, visitor_ids=devices, before_ms=before)
        ]
        out["pastConversations"] = _past_conversations(conn, conv, devices, workspace)
        out["bot"] = _bot(conn, conv)
        out["routing"] = _routing(conn, conv, workspace)
        return out


def _conversation(conv: conv_store.Conversation, workspace: Workspace) -> dict[str, Any]:
    return {
        "id": conv.id,
        "state": conv.state,
        "queue": conv.queue,
        "agentId": conv.agent_id,
        "language": conv.language,
        "createdAt": conv.created_at,
        "endedAt": conv.ended_at,
        "wrapUpCode": conv.wrap_up_code,
        "wrapUpCodes": list(workspace.queues[conv.queue].wrap_up_codes)
        if conv.queue in workspace.queues
        else [],
    }


def _visit(visit: Mapping[str, Any] | None, now_ms: int) -> dict[str, Any] | None:
    if visit is None:
        return None
    return {
        "sessionId": visit["id"],
        "number": visit["number"],
        "startedAt": visit["started_at"],
        "lastEventAt": visit["last_event_at"],
        "pages": visit["page_count"],
        "events": visit["event_count"],
        "timeOnSiteMs": max(0, visit["last_event_at"] - visit["started_at"]),
        "sinceLastEventMs": max(0, now_ms - visit["last_event_at"]),
    }


def _name(traits: Mapping[str, Any], registration: Mapping[str, Any] | None) -> str | None:
    for source in (traits, registration or {}):
        for key in ("name", "fullName", "full_name"):
            if isinstance(source.get(key), str) and source[key].strip():
                return str(source[key]).strip()
        first = source.get("firstName") or source.get("first_name")
        last = source.get("lastName") or source.get("last_name")
        if first or last:
            return " ".join(str(p) for p in (first, last) if p)
    return None


def _who(
    conn: Any, conv: conv_store.Conversation, visit: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Identity and traits once identified, device, place and how they came."""
    v = timeline.visitor_row(conn, conv.visitor_id) or {}
    customer = journeys.get_customer(conn, conv.customer_id) if conv.customer_id else None
    if customer is None and v.get("customer_id"):
        customer = journeys.get_customer(conn, v["customer_id"])
    traits = dict((customer or {}).get("traits") or {})
    s = visit or {}
    number = s.get("number") or v.get("session_count") or 1
    return {
        "visitorId": conv.visitor_id,
        "customerId": (customer or {}).get("id"),
        "identified": customer is not None,
        "name": _name(traits, conv.registration),
        "identifiers": (customer or {}).get("identifiers", []),
        "traits": traits,
        "registration": dict(conv.registration or {}),
        "returning": number > 1,
        "visitNumber": number,
        "visits": v.get("session_count"),
        "firstSeenAt": v.get("first_seen_at"),
        "device": {"type": s.get("device_type"), "browser": s.get("browser"), "os": s.get("os")},
        "location": {
            k: s.get(c)
            for k, c in (
                ("country", "country"),
                ("region", "region"),
                ("city", "city"),
                ("timezone", "timezone"),
                ("locale", "locale"),
            )
        },
        "landingPage": s.get("landing_url"),
        "referrer": s.get("referrer"),
        "referrerDomain": s.get("referrer_domain"),
        "campaign": {
            k: s.get(f"utm_{k}") for k in ("source", "medium", "campaign", "term", "content")
        },
    }


def _past_session(v: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "sessionId": v["id"],
        "visitorId": v["visitor_id"],
        "number": v["number"],
        "startedAt": v["started_at"],
        "durationMs": max(0, v["last_event_at"] - v["started_at"]),
        "pages": v["page_count"],
        "device": v["device_type"],
        "campaign": v["utm_campaign"],
        "referrerDomain": v["referrer_domain"],
        "landingPage": v["landing_url"],
        "outcomes": v["outcomes"],
    }


def _agent_name(workspace: Workspace, names: Mapping[str, str], agent_id: str | None) -> Any:
    if not agent_id:
        return None
    doc = workspace.agents.get(agent_id)
    return names.get(agent_id) or (doc.display_name if doc is not None else "") or agent_id


def _past_conversations(
    conn: Any, conv: conv_store.Conversation, devices: list[str], workspace: Workspace
) -> list[dict[str, Any]]:
    earlier = [c for c in conv_store.of_visitors(conn, devices) if c.id != conv.id]
    earlier = earlier[:PAST_LIMIT]
    names = timeline.agent_names(conn, [c.agent_id for c in earlier if c.agent_id])
    return [
        {
            "id": c.id,
            "createdAt": c.created_at,
            "endedAt": c.ended_at,
            "state": c.state,
            "queue": c.queue,
            "agentId": c.agent_id,
            "agentName": _agent_name(workspace, names, c.agent_id),
            "wrapUpCode": c.wrap_up_code,
            "rating": c.rating,
        }
        for c in earlier
    ]


def _bot(conn: Any, conv: conv_store.Conversation) -> dict[str, Any]:
    """The bot's part: the messages before a person took over, and what it understood."""
    said = []
    for m in conv_store.after(conn, conv.id, 0, limit=500):
        if m.sender == "agent":
            break
        if m.sender in ("bot", "visitor", "system"):
            said.append(m.to_json())
    extra = timeline.bot_columns(conn, conv.id)
    handled = any(m["sender"] == "bot" for m in said)
    return {
        "handled": handled,
        "transcript": said if handled else [],
        "intent": extra.get("intent"),
        "confidence": extra.get("intent_confidence"),
        "slots": extra.get("slots") or {},
        "flow": extra.get("flow"),
    }


def _routing(
    conn: Any, conv: conv_store.Conversation, workspace: Workspace
) -> dict[str, Any] | None:
    """Why this agent: the routing decision stored with the interaction."""
    row = interactions_store.get(conn, conv.id)
    if row is None:
        return None
    scores = [tuple(s) for s in json.loads(row.scores)] if row.scores else []
    mine = next((float(s) for a, s in scores if a == row.agent_id), None)
    queue = workspace.queues.get(row.queue)
    kpi = workspace.kpis.get(queue.kpi) if queue is not None and queue.kpi else None
    names = timeline.agent_names(conn, [row.agent_id] if row.agent_id else [])
    return {
        "status": row.status,
        "method": row.method,
        "arm": row.arm,
        "why": row.why,
        "agentId": row.agent_id,
        "agentName": _agent_name(workspace, names, row.agent_id),
        "arrivedAt": row.arrived_at,
        "assignedAt": row.assigned_at,
        "waitedMs": (row.assigned_at - row.arrived_at) if row.assigned_at else None,
        "propensity": row.propensity,
        "kpi": {"name": kpi.name, "type": kpi.type} if kpi is not None else None,
        "predicted": mine,
        "scores": [{"agentId": a, "score": float(s)} for a, s in scores],
        "candidates": len(json.loads(row.candidates)) if row.candidates else 0,
        "text": _routing_text(row.method, row.arm, kpi, mine),
    }


def _routing_text(method: str | None, arm: str | None, kpi: Any, mine: Any) -> str:
    if method is None:
        return "not routed yet"
    if method == "predictive" and mine is not None:
        what = human(kpi.name) if kpi is not None else "the queue's KPI"
        binary = kpi is None or kpi.type not in ("sales_value", "handle_time")
        shown = f"{mine:.0%}" if binary else f"{mine:,.2f}"
        return f"chosen by predictive routing: the best predicted {what} ({shown})"
    if method == "predictive":
        return "chosen by predictive routing"
    extra = " (the control group of the comparison)" if arm == "control" else ""
    return f"chosen by standard routing{extra}"
