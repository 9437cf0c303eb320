"""The admin console at ``/console``: what its pages share (the templates, who may read and
who may write, the page frame) and its home page, the workspace's kinds with their counts.

Each noun has its own module: ``console_definitions`` (segments, outcomes, action maps,
KPIs, queue KPIs: the database-editable kinds), ``console_models`` (outcome model cards),
``console_workspace`` (the workspace file's kinds, read only), ``console_users``,
``console_audit`` and ``console_transfer`` (export and import). Admins change things;
supervisors read (``core/permissions``: ``read_console``, ``configure``); agents are
refused every route. Every form posts the session's CSRF token (``api/people.py``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from fastapi import APIRouter, Depends, HTTPException, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from opportune.api.agent_pages import secure_page
from opportune.api.people import Person, require_person, set_session_cookie
from opportune.core.permissions import Action, why_not
from opportune.store import audit, users

CONSOLE_DIR: Final = Path(__file__).resolve().parent.parent / "web" / "console"

# The console's menu: (path, label), in the order of the home page.
EDITABLE: Final = (
    ("segments", "Segments"),
    ("outcomes", "Outcomes"),
    ("action-maps", "Action maps"),
    ("kpis", "KPIs"),
    ("queue-kpis", "Queue KPIs"),
)
READ_ONLY: Final = (
    ("sites", "Sites"),
    ("queues", "Queues"),
    ("agents", "Agents"),
    ("skills", "Skills"),
    ("wrap-up-codes", "Wrap-up codes"),
    ("content-offers", "Content offers"),
    ("bot-flows", "Bot flows"),
    ("routing", "Predictive routing"),
)
ADMIN: Final = (("users", "Users"), ("audit", "Audit log"), ("transfer", "Import / export"))


def _allowed(action: Action) -> Callable[[Request], Awaitable[Person]]:
    """A dependency: the signed-in person (CSRF checked on writes) whom the permission
    rules let do ``action``; 403 naming why not otherwise."""
    signed_in = require_person()

    async def dependency(request: Request) -> Person:
        person = await signed_in(request)
        reason = why_not(person.principal, action)
        if reason is not None:
            raise HTTPException(403, detail={"code": "forbidden", "message": reason})
        return person

    return dependency


Reader = Annotated[Person, Depends(_allowed("read_console"))]
Admin = Annotated[Person, Depends(_allowed("configure"))]


def env(console_dir: Path = CONSOLE_DIR) -> Environment:
    e = Environment(
        loader=FileSystemLoader(console_dir / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    e.filters["yaml"] = as_yaml
    e.filters["json"] = lambda v: json.dumps(v, indent=1, sort_keys=True, ensure_ascii=False)
    return e


def as_yaml(value: Any) -> str:
    """A document as the console shows and edits it: block YAML, keys in their order.

    >>> print(as_yaml({"name": "x", "condition": {"attribute": "device", "equals": "mobile"}}))
    name: x
    condition:
      attribute: device
      equals: mobile
    <BLANKLINE>
    """
    if value is None:
        return ""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)


def runtime(request: Request) -> Any:
    return request.app.state.runtime


def render(
    e: Environment,
    request: Request,
    person: Person,
    template: str,
    *,
    status: int = 200,
    section: str = "",
    **context: Any,
) -> HTMLResponse:
    """A console page: the frame's menu, who is signed in, whether they may write, the
    CSRF token its forms carry; the session cookie renewed as the session is."""
    html = e.get_template(template).render(
        user=person.user,
        csrf=person.session.csrf,
        can_write=why_not(person.principal, "configure") is None,
        section=section,
        editable=EDITABLE,
        read_only=READ_ONLY,
        admin_pages=ADMIN,
        **context,
    )
    resp = secure_page(html, status)
    set_session_cookie(request, resp, person.token)
    return resp


def _counts(request: Request) -> dict[str, Any]:
    rt = runtime(request)
    rules, ws = rt.rules, rt.workspace
    out: dict[str, Any] = {}
    for slug, kind in (
        ("segments", "segment"),
        ("outcomes", "outcome"),
        ("action-maps", "actionMap"),
        ("kpis", "kpi"),
        ("queue-kpis", "queueKpi"),
    ):
        docs = rules.docs(kind)
        out[slug] = {
            "workspace": sum(1 for _, s in docs if s == "workspace"),
            "database": sum(1 for _, s in docs if s == "api"),
        }
    skills = {s for a in ws.agents.values() for s in a.skills}
    skills |= {n.skill for q in ws.queues.values() for n in q.skills}
    codes = {c for q in ws.queues.values() for c in q.wrap_up_codes}
    out.update(
        {
            "sites": len(ws.sites),
            "queues": len(ws.queues),
            "agents": len(ws.agents),
            "skills": len(skills),
            "wrap-up-codes": len(codes),
            "content-offers": len(ws.templates),
            "bot-flows": len(ws.bot_flows),
            "routing": sum(1 for q in ws.queues.values() if q.predictive.enabled),
        }
    )
    with rt.ingestor.engine.connect() as conn:
        out["users"] = len(users.list_users(conn))
        out["audit"] = audit.count(conn)
    return out


def console_router(e: Environment) -> APIRouter:
    """``/console``: the home page."""
    api = APIRouter(prefix="/console", include_in_schema=False)

    @api.get("")
    async def home(request: Request, person: Reader) -> Response:
        counts = await run_in_threadpool(_counts, request)
        return render(e, request, person, "home.html", section="home", counts=counts)

    @api.get("/", include_in_schema=False)
    async def home_slash(request: Request, person: Reader) -> Response:
        return await home(request, person)

    return api


def install_console(app: Any) -> None:
    """Every console router, and its static files at ``/console/static``."""
    from starlette.staticfiles import StaticFiles

    from opportune.api.console_audit import console_audit_router
    from opportune.api.console_definitions import console_definitions_router
    from opportune.api.console_models import console_models_router
    from opportune.api.console_transfer import console_transfer_router
    from opportune.api.console_users import console_users_router
    from opportune.api.console_workspace import console_workspace_router

    e = env()
    app.mount("/console/static", StaticFiles(directory=CONSOLE_DIR / "static"), name="console")
    app.include_router(console_router(e))
    app.include_router(console_users_router(e))
    app.include_router(console_audit_router(e))
    app.include_router(console_transfer_router(e))
    app.include_router(console_models_router(e))
    app.include_router(console_workspace_router(e))
    app.include_router(console_definitions_router(e))  # last: /console/{kind}/{name}
