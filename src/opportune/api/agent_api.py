"""The agent workspace's JSON: a conversation with its transcript, the canned responses of
one's queues, the live conversations a supervisor monitors, and presence.

Every route asks :func:`opportune.api.people.require_person` (401 without a session, CSRF
on writes) and then ``core.permissions`` for the conversation or queue at hand.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from opportune.api.errors import error, not_found
from opportune.api.inputs import CamelIn
from opportune.api.people import Anyone, Watcher, runtime_sources
from opportune.core.permissions import Principal, can, why_not
from opportune.engine.chat import ChatError
from opportune.engine.router import PRESENCES, RoutingError
from opportune.store import conversations as chats
from opportune.store.conversations import Conversation

TRANSCRIPT_LIMIT = 5000


class PresenceIn(CamelIn):
    presence: str


def may_view(who: Principal, conv: Conversation) -> str | None:
    """``None`` if ``who`` may read ``conv`` (its assignee, a member or supervisor of its
    queue, an admin), else why not."""
    if can(who, "answer", assigned_to=conv.agent_id):
        return None
    return why_not(who, "view", queue=conv.queue)


def visitor_name(registration: Any) -> str | None:
    """The name the visitor gave in the chat's form, as the socket's summaries show it."""
    reg = registration or {}
    name = " ".join(str(reg[k]) for k in ("firstName", "lastName", "name") if reg.get(k))
    return name or None


def conversation_json(conv: Conversation, who: Principal) -> dict[str, Any]:
    return {
        "id": conv.id,
        "name": visitor_name(conv.registration),
        "state": conv.state,
        "queue": conv.queue,
        "agentId": conv.agent_id,
        "visitorId": conv.visitor_id,
        "customerId": conv.customer_id,
        "language": conv.language,
        "registration": conv.registration,
        "createdAt": conv.created_at,
        "updatedAt": conv.updated_at,
        "endedAt": conv.ended_at,
        "lastSeq": conv.last_seq,
        "visitorReadSeq": conv.visitor_read_seq,
        "agentReadSeq": conv.agent_read_seq,
        "wrapUpCode": conv.wrap_up_code,
        "rating": conv.rating,
        "canAnswer": can(who, "answer", assigned_to=conv.agent_id),
    }


def _visible_queues(who: Principal, names: Any) -> list[str]:
    return sorted(names) if who.role == "admin" else sorted(q for q in who.queues if q in names)


def agent_api_router() -> APIRouter:
    """``/agent/api/...`` for the desk's script."""
    api = APIRouter(prefix="/agent/api", tags=["agent workspace"])
    _conversation_routes(api)
    _desk_routes(api)
    return api


def _conversation_routes(api: APIRouter) -> None:
    """A conversation with its transcript, and the lists of them an agent or supervisor sees."""

    @api.get("/conversations/{conversation_id}")
    async def conversation(
        conversation_id: str, request: Request, person: Anyone
    ) -> dict[str, Any]:
        engine, _agents, _queues = runtime_sources(request)

        def read() -> tuple[Conversation, list[chats.Message]]:
            with engine.connect() as conn:
                conv = chats.get(conn, conversation_id)
                reason = may_view(person.principal, conv)
                if reason is not None:
                    raise error(403, "forbidden", reason)
                return conv, chats.after(conn, conversation_id, 0, limit=TRANSCRIPT_LIMIT)

        try:
            conv, messages = await run_in_threadpool(read)
        except chats.NotFound:
            raise not_found(f"conversation {conversation_id!r} not found") from None
        return {
            "conversation": conversation_json(conv, person.principal),
            "messages": [m.to_json() for m in messages],
        }

    @api.get("/conversations")
    async def mine(request: Request, person: Anyone) -> dict[str, Any]:
        """The conversations routed to the signed-in agent and not closed (what the socket's
        ``hello`` lists), so the desk shows them even before the socket is up."""
        engine, _agents, _queues = runtime_sources(request)
        who, agent_id = person.principal, person.principal.agent_id
        if agent_id is None:
            return {"items": []}

        def read() -> list[Conversation]:
            with engine.connect() as conn:
                return chats.of_agent(conn, agent_id)

        convs = await run_in_threadpool(read)
        return {"items": [conversation_json(c, who) for c in convs]}

    @api.get("/monitor")
    async def monitor(request: Request, person: Watcher) -> dict[str, Any]:
        """The live conversations of the supervisor's queues (an admin's: all), to watch."""
        engine, _agents, all_queues = runtime_sources(request)
        who = person.principal

        def read() -> list[Conversation]:
            queues = sorted(all_queues) if who.role == "admin" else sorted(who.queues)
            with engine.connect() as conn:
                return chats.live_in_queues(conn, queues)

        convs = await run_in_threadpool(read)
        return {"items": [conversation_json(c, who) for c in convs]}


def _desk_routes(api: APIRouter) -> None:
    """Canned responses and presence."""

    @api.get("/canned")
    async def canned(request: Request, person: Anyone) -> Any:
        _engine, _agents, queues = runtime_sources(request)
        items = [
            {"queue": q, "title": c.title, "text": c.text, "language": c.language}
            for q in _visible_queues(person.principal, queues)
            for c in queues[q].canned_responses
        ]
        return {"items": items}

    @api.post("/presence")
    async def presence(body: PresenceIn, request: Request, person: Anyone) -> dict[str, Any]:
        """The signed-in agent's presence (the socket's ``presence`` frame, for when the
        socket is down): only an agent sets it, and only their own."""
        agent_id = person.principal.agent_id
        if agent_id is None:
            raise error(403, "forbidden", "only an agent has a presence")
        if body.presence not in PRESENCES:
            raise error(
                422, "bad_presence", f"presence is one of {', '.join(PRESENCES)}", path="presence"
            )
        runtime, now = request.app.state.runtime, int(time.time() * 1000)
        try:
            if runtime.chat is not None:  # as the socket's frame: pacing and other tabs told
                await runtime.chat.presence(person.principal, body.presence, now_ms=now)
            else:
                await run_in_threadpool(runtime.router.presence, agent_id, body.presence, now)
        except ChatError as exc:
            status = {"forbidden": 403, "unknown_agent": 404, "bad_presence": 422}
            raise error(status.get(exc.code, 409), exc.code, exc.message) from None
        except RoutingError as exc:
            raise error(exc.status, exc.code, exc.message) from None
        return {"agentId": agent_id, "presence": body.presence}
