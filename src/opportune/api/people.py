"""Who is signed in to the agent workspace: the session cookie, the principal it stands for,
the dependency every ``/agent`` route asks, and the CSRF check of every write.

The cookie (``opportune_session``) holds a random token; the database holds its hash
(``store/users.py``). A page without a session redirects to ``/agent/login``; the JSON API
(``/agent/api/...``) answers 401; a person of the wrong role gets 403. Every write (any
method but GET/HEAD/OPTIONS) must carry the session's CSRF token: a form as its hidden
``csrf`` field, a script as the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import parse_qs, quote

from fastapi import Depends, HTTPException, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from opportune.core.permissions import Principal, Role
from opportune.core.routing import Agent, member_of
from opportune.engine.router import core_queue
from opportune.store import users
from opportune.workspace.engagement import AgentDoc, QueueDoc

COOKIE: Final = "opportune_session"
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FIELD: Final = "csrf"
LOGIN_PATH: Final = "/agent/login"
API_PREFIX: Final = "/agent/api/"
MAX_FORM_BYTES: Final = 64 * 1024
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Person:
    """A signed-in person as a route sees them: the session (user, CSRF token), the
    principal the permission rules judge, and the cookie's token (to end the session)."""

    session: users.Session
    principal: Principal
    token: str

    @property
    def user(self) -> users.User:
        return self.session.user


def agent_queues(agent: AgentDoc, queues: Mapping[str, QueueDoc]) -> frozenset[str]:
    """The queues an agent belongs to (``core.routing.member_of``: named on the agent, or
    every queue when none are; taking a medium of the queue; with its skills from the first
    minute, not the wider rings a long wait opens) — the router's own rule."""
    core_agent = Agent(
        id=agent.name,
        skills=dict(agent.skills),
        languages=frozenset(agent.languages),
        capacity=dict(agent.capacity),
        queues=frozenset(agent.queues) if agent.queues is not None else None,
    )
    return member_of(core_agent, [core_queue(q, None) for q in queues.values()])


def principal_for(
    user: users.User, agents: Mapping[str, AgentDoc], queues: Mapping[str, QueueDoc]
) -> Principal:
    """What the permission rules see of ``user``: an agent's queues come from the workspace
    (an agent user whose agent is no longer there belongs to no queue); a supervisor's or
    admin's are those set on the user."""
    mine: frozenset[str] = frozenset()
    if user.role == "agent" and user.agent_id in agents:
        mine = agent_queues(agents[user.agent_id], queues)
    return users.principal(user, mine)


def person_of(
    engine: Engine,
    token: str | None,
    *,
    now_ms: int,
    agents: Mapping[str, AgentDoc],
    queues: Mapping[str, QueueDoc],
) -> tuple[users.Session, Principal] | None:
    """The live session of a cookie's token and its principal, or ``None`` (no cookie, an
    unknown or forged token, an expired session, a disabled user). Blocking: call it from
    a thread when on the event loop."""
    if not token:
        return None
    with engine.begin() as conn:  # begin: the session may be renewed
        session = users.session_of(conn, token, now_ms=now_ms)
    if session is None:
        return None
    return session, principal_for(session.user, agents, queues)


def _now_ms() -> int:
    return int(time.time() * 1000)


def runtime_sources(
    request: Request,
) -> tuple[Engine, Mapping[str, AgentDoc], Mapping[str, QueueDoc]]:
    """The database, agents and queues of the running app (queues as the router has them
    now: the admin API may have changed them)."""
    rt = request.app.state.runtime
    queues = rt.router.docs if rt.router is not None else rt.workspace.queues
    return rt.ingestor.engine, rt.workspace.agents, queues


def is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


def _unsigned(request: Request) -> HTTPException:
    if is_api(request):
        return HTTPException(
            401, detail={"code": "not_signed_in", "message": "sign in at /agent/login"}
        )
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(303, headers={"Location": f"{LOGIN_PATH}?next={quote(target, safe='')}"})


def csrf_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a presented CSRF token with the session's."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


async def form_fields(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the pages' forms), first value of each
    field; read once and kept on the request, so a route can read it again."""
    cached = getattr(request.state, "form_fields", None)
    if cached is not None:
        return dict(cached)
    fields: dict[str, str] = {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, detail={"code": "too_large", "message": "form too large"})
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        fields = {k: v[0] for k, v in parsed.items()}
    request.state.form_fields = fields
    return dict(fields)


async def check_csrf(request: Request, expected: str) -> None:
    """403 unless a write carries ``expected``: the header, or a form's ``csrf`` field."""
    if request.method in _SAFE:
        return
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        given = (await form_fields(request)).get(CSRF_FIELD)
    if not csrf_matches(expected, given):
        raise HTTPException(
            403,
            detail={
                "code": "bad_csrf",
                "message": f"missing or wrong CSRF token (send {CSRF_HEADER} or the form's "
                f"{CSRF_FIELD} field)",
            },
        )


def require_person(*roles: Role) -> Callable[[Request], Awaitable[Person]]:
    """A FastAPI dependency: the signed-in :class:`Person` of one of ``roles`` (any role when
    none are named), with the CSRF token checked on writes."""
    allowed = frozenset(roles)

    async def dependency(request: Request) -> Person:
        token = request.cookies.get(COOKIE)
        engine, agents, queues = runtime_sources(request)
        found = await run_in_threadpool(
            person_of, engine, token, now_ms=_now_ms(), agents=agents, queues=queues
        )
        if found is None or token is None:
            raise _unsigned(request)
        session, principal = found
        if allowed and principal.role not in allowed:
            wanted = " or ".join(sorted(allowed))
            raise HTTPException(
                403,
                detail={"code": "forbidden", "message": f"this needs the role {wanted}"},
            )
        await check_csrf(request, session.csrf)
        return Person(session, principal, token)

    return dependency


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    """The session cookie: script-proof, same-site, Secure over https; it lasts as long as
    a session does, and a page load renews it as the session itself is renewed."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=users.SESSION_MS // 1000,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="lax", secure=request.url.scheme == "https"
    )


# The dependencies the workspace's routes take: anyone signed in, or a supervisor or admin.
Anyone = Annotated[Person, Depends(require_person())]
Watcher = Annotated[Person, Depends(require_person("supervisor", "admin"))]
