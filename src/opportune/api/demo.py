"""The demo website under ``/demo/``: pages rendered from Jinja2 templates that share one
layout (``web/demo/templates/``), and its stylesheet served as a file (``web/demo/static/``).

The pages have no per-request data, so each is rendered once, when the site is built.

``/demo/crm/leads`` is the demo bank's stand-in for a real CRM (kept in memory, gone at a
restart, bounded): the example workspace's ``kind: crm`` document points the agent's CRM
panel at it, so the panel's look-up, create and update work out of the box. A real
deployment points that document at its own CRM instead.
"""

from __future__ import annotations

import itertools
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles


def render_pages(templates: Path) -> dict[str, str]:
    """Every page template (``_``-prefixed ones are layouts) rendered, by file name."""
    env = Environment(
        loader=FileSystemLoader(templates),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return {
        p.name: env.get_template(p.name).render()
        for p in sorted(templates.glob("*.html"))
        if not p.name.startswith("_")
    }


def demo_site(directory: Path) -> Router:
    """The ASGI app to mount at ``/demo``: ``/`` is ``index.html``, ``/<page>.html`` a page,
    anything else a file of ``static/``."""
    pages = render_pages(directory / "templates")

    async def page(request: Request) -> HTMLResponse:
        name = f"{request.path_params.get('name', 'index')}.html"
        if name not in pages:
            raise HTTPException(status_code=404)
        return HTMLResponse(pages[name])

    crm = DemoCrm()
    return Router(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/{name}.html", page, methods=["GET"]),
            Route("/crm/leads", crm.find, methods=["GET"]),
            Route("/crm/leads", crm.create, methods=["POST"]),
            Route("/crm/leads/{lead}", crm.read, methods=["GET"]),
            Route("/crm/leads/{lead}", crm.update, methods=["PATCH", "PUT"]),
            Mount("/", StaticFiles(directory=directory / "static")),
        ]
    )


class DemoCrm:
    """The demo's stand-in CRM: leads in memory (the newest ``capacity``), found by email,
    phone or customer id; a lead is a flat object of short texts and numbers."""

    MATCH = ("email", "phone", "customerId")

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self.leads: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._ids = itertools.count(1)

    async def find(self, request: Request) -> JSONResponse:
        asked = {k: v.strip().lower() for k, v in request.query_params.items() if k in self.MATCH}
        if not asked:
            return _crm_error(422, "give one of email, phone, customerId")
        items = [
            lead
            for lead in reversed(self.leads.values())
            if any(str(lead.get(k, "")).strip().lower() == v for k, v in asked.items() if v)
        ]
        return JSONResponse({"items": items})

    async def read(self, request: Request) -> JSONResponse:
        lead = self.leads.get(request.path_params["lead"])
        return JSONResponse(lead) if lead else _crm_error(404, "no such lead")

    async def create(self, request: Request) -> JSONResponse:
        fields = await _lead_fields(request)
        if isinstance(fields, JSONResponse):
            return fields
        lead_id = f"L-{next(self._ids):05d}"
        self.leads[lead_id] = {**fields, "id": lead_id, "status": fields.get("status", "new")}
        while len(self.leads) > self.capacity:
            self.leads.popitem(last=False)
        return JSONResponse(self.leads[lead_id], status_code=201)

    async def update(self, request: Request) -> JSONResponse:
        lead = self.leads.get(request.path_params["lead"])
        if lead is None:
            return _crm_error(404, "no such lead")
        fields = await _lead_fields(request)
        if isinstance(fields, JSONResponse):
            return fields
        lead.update({k: v for k, v in fields.items() if k != "id" and v is not None})
        return JSONResponse(lead)


def _crm_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _lead_fields(request: Request) -> dict[str, Any] | JSONResponse:
    """The lead's fields from a JSON body: at most 30 short scalars."""
    body = await request.body()
    if len(body) > 16_384:
        return _crm_error(413, "a lead is at most 16 KB")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return _crm_error(400, "the body is not JSON")
    if not isinstance(data, dict) or len(data) > 30:
        return _crm_error(422, "a lead is a JSON object of at most 30 fields")
    out: dict[str, Any] = {}
    for k, v in data.items():
        if v is not None and not isinstance(v, str | int | float | bool):
            return _crm_error(422, f"{k}: a lead's fields are texts or numbers")
        out[str(k)[:64]] = v[:1000] if isinstance(v, str) else v
    return out
