"""The demo website under ``/demo/``: pages rendered from Jinja2 templates that share one
layout (``web/demo/templates/``), and its stylesheet served as a file (``web/demo/static/``).

The pages have no per-request data, so each is rendered once, when the site is built.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse
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

    return Router(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/{name}.html", page, methods=["GET"]),
            Mount("/", StaticFiles(directory=directory / "static")),
        ]
    )
