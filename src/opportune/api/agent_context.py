"""The agent workspace's context and CRM panels over REST:

- ``GET /agent/api/conversations/{id}/context[?since=CURSOR]``: the context panel's JSON
  (``engine/context.py``); with ``since``, only what moves (timeline items from the cursor,
  scores, segments, routing), for the page's refresh every few seconds.
- ``POST /agent/api/conversations/{id}/crm``: ``{"operation": "lookup"|"create"|"update",
  "crm"?: name, "leadId"?: id, "fields"?: {...}}`` through the workspace's ``kind: crm``
  (``engine/crm.py``); answers 200 with what came of it, a CRM failure included (the
  panel shows it; the chat goes on).

Who may: seeing the context takes ``view`` on the conversation's queue or being the agent
it is routed to (``answer``); writing a lead (create, update) takes ``answer``: the agent in
the chat acts for the customer, a supervisor watches. The sign-in dependency is handed in
(the workspace's pages own it); it answers 401 / 403 and checks CSRF on writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from opportune.api.errors import error, not_found
from opportune.api.inputs import CamelIn, now_ms
from opportune.core.permissions import Principal, can, why_not
from opportune.engine.context import BadSince, conversation_context
from opportune.engine.crm import CrmClient
from opportune.engine.ingest import Ingestor
from opportune.engine.rules import RuleBook
from opportune.store import conversations as conv_store
from opportune.store import journeys
from opportune.workspace import Workspace

Value = Annotated[str, Field(max_length=1000)]


class CrmRequest(CamelIn):
    operation: Literal["lookup", "create", "update"]
    crm: str | None = Field(default=None, max_length=64)
    lead_id: str | None = Field(default=None, min_length=1, max_length=128)
    fields: dict[Annotated[str, Field(min_length=1, max_length=64)], Value] = Field(
        default_factory=dict, max_length=20
    )


def principal_of(person: Any) -> Principal:
    """The principal of what the sign-in dependency gave: a ``Person`` (its ``principal``)
    or a principal itself."""
    found = getattr(person, "principal", person)
    if not isinstance(found, Principal):
        raise TypeError("the sign-in dependency must give a Person or a Principal")
    return found


def _may_see(who: Principal, conv: conv_store.Conversation) -> str | None:
    """None if ``who`` may see the conversation, else why not."""
    if can(who, "answer", assigned_to=conv.agent_id):
        return None
    return why_not(who, "view", queue=conv.queue)


def agent_context_router(
    *,
    require_person: Callable[..., Any],
    ingestor: Ingestor,
    rules: RuleBook,
    workspace: Workspace,
    crm: CrmClient | None = None,
) -> APIRouter:
    """The router; ``require_person`` is the sign-in dependency (a ``Person`` or a
    ``Principal``), ``crm`` the client CRM calls go through (one is made if none)."""
    router = APIRouter(prefix="/agent/api", tags=["agent"])
    client = crm or CrmClient(secrets=ingestor.settings.webhook_secrets)
    signed_in = Depends(require_person)

    def load(conversation_id: str, who: Principal) -> conv_store.Conversation:
        with ingestor.engine.connect() as conn:
            try:
                conv = conv_store.get(conn, conversation_id)
            except conv_store.NotFound:
                raise not_found(f"conversation {conversation_id!r} not found") from None
        reason = _may_see(who, conv)
        if reason is not None:
            raise error(403, "forbidden", reason)
        return conv

    @router.get("/conversations/{conversation_id}/context")
    async def context(
        conversation_id: str,
        since: Annotated[str | None, Query(max_length=20)] = None,
        person: Any = signed_in,
    ) -> dict[str, Any]:
        await run_in_threadpool(load, conversation_id, principal_of(person))
        try:
            return await conversation_context(
                ingestor, rules, workspace, conversation_id, now_ms=now_ms(), since=since
            )
        except BadSince as exc:
            raise error(422, "invalid_request", str(exc), path="since") from None
        except conv_store.NotFound:  # erased meanwhile
            raise not_found(f"conversation {conversation_id!r} not found") from None

    @router.post("/conversations/{conversation_id}/crm")
    async def crm_call(
        conversation_id: str, body: CrmRequest, request: Request, person: Any = signed_in
    ) -> dict[str, Any]:
        who = principal_of(person)
        conv = await run_in_threadpool(load, conversation_id, who)
        if body.operation != "lookup" and not can(who, "answer", assigned_to=conv.agent_id):
            raise error(403, "forbidden", "only the agent in the chat may write its lead")
        doc = _crm_doc(workspace, body.crm)
        if doc.call(body.operation) is None:
            raise error(
                422, "not_configured", f"crm {doc.name!r} has no {body.operation}", path="operation"
            )
        if body.operation == "update" and not body.lead_id:
            raise error(422, "invalid_request", "an update names the lead (leadId)", path="leadId")
        values = await run_in_threadpool(_template_context, ingestor, workspace, conv, who, body)
        result = await client.call(doc, body.operation, values, base_url=own_base(request))
        return {"crm": doc.name, **result.to_json()}

    @router.get("/crm")
    async def crm_info(person: Any = signed_in) -> dict[str, Any]:
        """The CRMs configured and what each can do (the panel's buttons)."""
        principal_of(person)
        return {
            "crms": [
                {"name": d.name, "description": d.description, "operations": d.operations}
                for d in workspace.crms.values()
            ]
        }

    return router


def own_base(request: Request) -> str | None:
    """This server's own address, for a CRM call given as a path: the socket it listens
    on, never the request's ``Host`` (a client could name any host there, and the call
    carries the CRM's secrets)."""
    server = request.scope.get("server")
    if not server or server[1] is None:
        return None
    host, port = server
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _crm_doc(workspace: Workspace, name: str | None) -> Any:
    if name is not None:
        doc = workspace.crms.get(name)
        if doc is None:
            raise error(422, "not_configured", f"no crm named {name!r}", path="crm")
        return doc
    if not workspace.crms:
        raise error(422, "not_configured", "no CRM is configured (a kind: crm document)")
    if len(workspace.crms) > 1:
        raise error(422, "invalid_request", "several CRMs: name one (crm)", path="crm")
    return next(iter(workspace.crms.values()))


def _template_context(
    ingestor: Ingestor,
    workspace: Workspace,
    conv: conv_store.Conversation,
    who: Principal,
    body: CrmRequest,
) -> dict[str, Any]:
    """What a CRM call's templates may read: the customer (identifiers first, then what
    the chat's form said), the conversation, the agent, the lead and the panel's fields."""
    with ingestor.engine.connect() as conn:
        customer_id = conv.customer_id
        if customer_id is None:  # identified after the chat began: the visitor knows
            customer_id = (journeys.get_visitor(conn, conv.visitor_id) or {}).get("customerId")
        row = journeys.get_customer(conn, customer_id) if customer_id else None
    form = dict(conv.registration or {})
    traits = dict((row or {}).get("traits") or {})
    idents = {i["kind"]: i["value"] for i in (row or {}).get("identifiers", [])}
    name = traits.get("name") or " ".join(
        str(p)
        for p in (
            traits.get("firstName") or form.get("firstName"),
            traits.get("lastName") or form.get("lastName"),
        )
        if p
    )
    customer = {
        "id": customer_id,
        "name": name or form.get("name"),
        "email": idents.get("email") or form.get("email"),
        "phone": idents.get("phone") or form.get("phone"),
        "customerId": idents.get("customer_id"),
        "traits": traits,
    }
    agent_doc = workspace.agents.get(who.agent_id or "")
    return {
        "visitor": {"id": conv.visitor_id},
        "customer": customer,
        "conversation": {"id": conv.id, "queue": conv.queue, "language": conv.language},
        "agent": {
            "id": who.agent_id,
            "name": (agent_doc.display_name if agent_doc else None) or who.agent_id,
        },
        "lead": {"id": body.lead_id},
        "fields": dict(body.fields),
    }
