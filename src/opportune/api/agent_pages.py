"""The agent workspace's pages: sign-in, sign-out and the desk at ``/agent``.

Pages are Jinja2 templates (``web/agent/templates/``, autoescaped) with one small script
(``web/agent/static/desk.js``); everything live goes over the agent socket
(docs/conversations.md). Every page asks :func:`opportune.api.people.require_person`; the
sign-in form, which has no session yet, carries a CSRF token paired with a short-lived
cookie (double submit), so no other site can sign a browser in as someone else.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from opportune.api.people import (
    COOKIE,
    CSRF_FIELD,
    Anyone,
    Person,
    clear_session_cookie,
    csrf_matches,
    form_fields,
    person_of,
    runtime_sources,
    set_session_cookie,
)
from opportune.store import users
from opportune.store.interactions import agent_states

AGENT_DIR: Final = Path(__file__).resolve().parent.parent / "web" / "agent"
LOGIN_CSRF_COOKIE: Final = "opportune_login_csrf"
PRESENCES: Final = ("available", "busy", "away", "offline")
WRONG: Final = "Wrong email or password."
# No inline script runs and nothing loads from elsewhere: a visitor's text that slipped
# past textContent still could not execute. Styles stay inline-capable for context.js.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


def _env(templates: Path) -> Environment:
    return Environment(
        loader=FileSystemLoader(templates),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def secure_page(html: str, status: int = 200) -> HTMLResponse:
    """A signed-in page: the strict CSP (no inline script), never cached, no sniffing."""
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path of the workspace, reports, Live Now or the
    console (never another site, never ``//host``), else the desk."""
    if not target:
        return "/agent"
    parts = urlsplit(target)
    inside = parts.path in ("/agent", "/reports", "/live", "/console") or parts.path.startswith(
        ("/agent/", "/reports/", "/live/", "/console/")
    )
    if parts.scheme or parts.netloc or not inside:
        return "/agent"
    if target.startswith("//") or "\\" in target or parts.path.startswith("/agent/logout"):
        return "/agent"
    return target


def _now_ms() -> int:
    return int(time.time() * 1000)


def desk_config(request: Request, person: Person) -> dict[str, Any]:
    """What the desk's script starts from: who is signed in, their CSRF token, the queues
    they see (wrap-up codes), where a chat may be transferred, and their presence."""
    engine, agents, queues = runtime_sources(request)
    p = person.principal
    mine = sorted(queues) if p.role == "admin" else sorted(q for q in p.queues if q in queues)
    presence = "offline"
    if p.agent_id is not None:
        with engine.connect() as conn:
            row = agent_states(conn).get(p.agent_id)
        presence = row.presence if row is not None else "offline"
    agent = agents.get(p.agent_id or "")
    return {
        "user": {"id": person.user.id, "name": person.user.name, "role": p.role},
        "agent": {"id": p.agent_id, "name": (agent.display_name or agent.name)} if agent else None,
        "csrf": person.session.csrf,
        "presence": presence,
        "presences": list(PRESENCES),
        "myQueues": mine,
        # Every queue's codes: a chat transferred in from another queue is wrapped up
        # with that queue's codes.
        "queues": {
            name: {"name": name, "description": q.description, "wrapUpCodes": list(q.wrap_up_codes)}
            for name, q in sorted(queues.items())
        },
        "transfer": {
            "queues": sorted(queues),
            "agents": [
                {"id": a.name, "name": a.display_name or a.name}
                for a in sorted(agents.values(), key=lambda a: a.name)
            ],
        },
        "socket": "/agent/ws",
    }


def _login_page(
    env: Environment,
    request: Request,
    *,
    next_: str,
    email: str = "",
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The sign-in form, its CSRF token paired with a cookie only the form's path gets."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    html = env.get_template("login.html").render(
        csrf=token, next=next_, email=email, errors=errors or {}
    )
    resp = secure_page(html, status)
    resp.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/agent/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return resp


def _open_session(engine: Engine, email: str, password: str) -> str | None:
    """The new session's cookie token, or ``None`` for a wrong email or password."""
    with engine.begin() as conn:
        user = users.authenticate(conn, email, password)
        if user is None:
            return None
        token, _session = users.start_session(conn, user, now_ms=_now_ms())
        return token


def _sign_in_routes(api: APIRouter, env: Environment) -> None:
    @api.get("/login")
    async def login_form(request: Request, next: str | None = None) -> Response:
        engine, agents, queues = runtime_sources(request)
        token = request.cookies.get(COOKIE)
        found = await run_in_threadpool(
            person_of, engine, token, now_ms=_now_ms(), agents=agents, queues=queues
        )
        if found is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return _login_page(env, request, next_=safe_next(next))

    @api.post("/login")
    async def login(request: Request) -> Response:
        form = await form_fields(request)
        next_ = safe_next(form.get("next"))
        email, password = form.get("email", "").strip(), form.get("password", "")
        expected = request.cookies.get(LOGIN_CSRF_COOKIE)
        errors: dict[str, str] = {}
        if not expected or not csrf_matches(expected, form.get(CSRF_FIELD)):
            errors["form"] = "This form expired. Please sign in again."
            return _login_page(env, request, next_=next_, email=email, errors=errors, status=403)
        if not email:
            errors["email"] = "Enter your email address."
        if not password:
            errors["password"] = "Enter your password."
        if errors:
            return _login_page(env, request, next_=next_, email=email, errors=errors, status=422)
        engine, _agents, _queues = runtime_sources(request)
        token = await run_in_threadpool(_open_session, engine, email, password)
        if token is None:
            errors["password"] = WRONG
            return _login_page(env, request, next_=next_, email=email, errors=errors, status=401)
        resp = RedirectResponse(next_, status_code=303)
        set_session_cookie(request, resp, token)
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/agent/login")
        return resp


def agent_pages_router(agent_dir: Path = AGENT_DIR) -> APIRouter:
    """``/agent/login``, ``/agent/logout`` and ``/agent``."""
    env = _env(agent_dir / "templates")
    # The context panel's script and style come from their own module when it is there.
    has_context = (agent_dir / "static" / "context.js").is_file()
    has_context_css = (agent_dir / "static" / "context.css").is_file()
    api = APIRouter(prefix="/agent", include_in_schema=False)
    _sign_in_routes(api, env)

    @api.post("/logout")
    async def logout(request: Request, person: Anyone) -> Response:
        engine, _agents, _queues = runtime_sources(request)

        def end() -> None:
            with engine.begin() as conn:
                users.end_session(conn, person.token)

        await run_in_threadpool(end)
        resp = RedirectResponse("/agent/login", status_code=303)
        clear_session_cookie(request, resp)
        return resp

    @api.get("")
    async def desk(request: Request, person: Anyone) -> Response:
        config = await run_in_threadpool(desk_config, request, person)
        html = env.get_template("desk.html").render(
            config=json.dumps(config).replace("<", "\\u003c"),
            user=config["user"],
            agent=config["agent"],
            csrf=person.session.csrf,
            presences=PRESENCES,
            presence=config["presence"],
            read_only=config["agent"] is None,
            has_context=has_context,
            has_context_css=has_context_css,
        )
        resp = secure_page(html)
        set_session_cookie(request, resp, person.token)  # lasts as the session is renewed
        return resp

    @api.get("/", include_in_schema=False)
    async def desk_slash() -> Response:
        return RedirectResponse("/agent", status_code=308)

    return api
