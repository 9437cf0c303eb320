"""The console's users page: who may sign in, with which role; an admin adds people,
changes a role (an agent's routing agent, a supervisor's queues), disables, enables and
deletes them (``store/users.py``). Each change is audited (kind ``user``, named by email;
never a password hash). An admin cannot disable, delete or demote themselves: the console
would lock out the last person able to undo it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from jinja2 import Environment
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from opportune.api.console import Admin, Reader, render, runtime
from opportune.api.console_definitions import actor_of
from opportune.api.people import Person, form_fields
from opportune.core.permissions import ROLES
from opportune.store import audit, users


def _now_ms() -> int:
    return int(time.time() * 1000)


def user_json(u: users.User) -> dict[str, Any]:
    """A user as the audit log keeps it: no password, no session."""
    return {
        "email": u.email,
        "name": u.name,
        "role": u.role,
        "agentId": u.agent_id,
        "queues": list(u.queues),
        "disabled": u.disabled,
    }


def _split(text: str) -> list[str]:
    return [q.strip() for q in text.replace("\n", ",").split(",") if q.strip()]


def _field_error(exc: users.UserError) -> dict[str, str]:
    """``"email: already taken"`` as ``{"email": "already taken"}``."""
    field, _, message = str(exc).partition(": ")
    return {field: message} if message else {"form": str(exc)}


def _page(e: Environment, request: Request, person: Person, **ctx: Any) -> Response:
    rt = runtime(request)
    with rt.ingestor.engine.connect() as conn:
        people = users.list_users(conn)
    ctx.setdefault("errors", {})
    ctx.setdefault("values", {"role": "agent"})
    status = ctx.pop("status", 200)
    return render(
        e,
        request,
        person,
        "users.html",
        status=status,
        section="users",
        people=people,
        roles=ROLES,
        agents=sorted(rt.workspace.agents),
        queues=sorted(rt.workspace.queues),
        me=person.user.id,
        **ctx,
    )


def _change(
    request: Request, person: Person, user_id: str, change: Any, action: audit.Action
) -> None:
    """Apply ``change(conn, user)`` and audit it in the same transaction."""
    if user_id == person.user.id:
        raise users.UserError("form: you cannot change your own account here")
    with runtime(request).ingestor.engine.begin() as conn:
        try:
            before = users.get_user(conn, user_id)
        except LookupError:
            raise HTTPException(404, detail={"message": "no such user"}) from None
        change(conn, before)
        after = None if action == "delete" else user_json(users.get_user(conn, user_id))
        audit.record(
            conn,
            at=_now_ms(),
            actor=actor_of(person),
            action=action,
            kind="user",
            name=before.email,
            before=user_json(before),
            after=after,
        )


def _add_user(request: Request, person: Any, form: dict[str, str], values: dict[str, str]) -> None:
    """Create the user of the form and record it, in one transaction."""
    with runtime(request).ingestor.engine.begin() as conn:
        made = users.create_user(
            conn,
            email=values["email"],
            name=values["name"],
            role=values["role"],  # type: ignore[arg-type]  # checked by create_user
            password=form.get("password", ""),
            now_ms=_now_ms(),
            agent_id=values["agent_id"].strip() or None,
            queues=_split(values["queues"]),
        )
        audit.record(
            conn,
            at=_now_ms(),
            actor=actor_of(person),
            action="create",
            kind="user",
            name=made.email,
            before=None,
            after=user_json(made),
        )


def _change_of(
    form: dict[str, str], what: str
) -> tuple[Callable[[Connection, users.User], None], audit.Action]:
    """What a change button does to a user, and how the audit log names it; 404 for a
    change that does not exist."""
    if what == "role":

        def role(conn: Connection, u: users.User) -> None:
            users.change_role(
                conn,
                u.id,
                role=form.get("role", ""),  # type: ignore[arg-type]
                agent_id=form.get("agent_id", "").strip() or None,
                queues=_split(form.get("queues", "")),
            )

        return role, "update"
    if what == "disable":
        return (lambda conn, u: users.disable(conn, u.id, now_ms=_now_ms())), "update"
    if what == "enable":
        return (lambda conn, u: users.enable(conn, u.id)), "update"
    if what == "delete":
        return (lambda conn, u: users.delete_user(conn, u.id)), "delete"
    raise HTTPException(404, detail={"code": "not_found", "message": f"no action {what!r}"})


def console_users_router(e: Environment) -> APIRouter:
    api = APIRouter(prefix="/console/users", include_in_schema=False)

    @api.get("")
    async def listing(request: Request, person: Reader) -> Response:
        return await run_in_threadpool(_page, e, request, person)

    @api.post("/_new")
    async def create(request: Request, person: Admin) -> Response:
        form = await form_fields(request)
        values = {k: form.get(k, "") for k in ("email", "name", "role", "agent_id", "queues")}
        try:
            await run_in_threadpool(_add_user, request, person, form, values)
        except users.UserError as exc:
            errors = _field_error(exc)
            return await run_in_threadpool(
                lambda: _page(e, request, person, errors=errors, values=values, status=422)
            )
        return RedirectResponse("/console/users", status_code=303)

    @api.post("/{user_id}/{what}")
    async def change(request: Request, user_id: str, what: str, person: Admin) -> Response:
        form = await form_fields(request)
        apply, action = _change_of(form, what)
        try:
            await run_in_threadpool(_change, request, person, user_id, apply, action)
        except users.UserError as exc:
            errors = {
                k if k == "form" else f"{user_id}:{k}": v for k, v in _field_error(exc).items()
            }
            return await run_in_threadpool(
                lambda: _page(e, request, person, errors=errors, status=422)
            )
        return RedirectResponse("/console/users", status_code=303)

    return api
