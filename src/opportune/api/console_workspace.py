"""The console's read-only pages: what the workspace files own (sites, queues, agents,
content offers, bot flows) and what follows from them (skills, wrap-up codes), and
predictive routing per queue (its settings, the readiness of its history, its model card
and the comparison test's state). These are changed by editing the workspace files; the
pages say so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from fastapi import APIRouter, HTTPException, Request
from jinja2 import Environment
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from opportune.api.console import Reader, render, runtime
from opportune.api.kpis import kpi_readiness
from opportune.ml.registry import RegistryError
from opportune.ml.routing.registry import RoutingRegistry
from opportune.workspace import Workspace
from opportune.workspace.engagement import Style

FILE_NOTE: Final = "Defined in the workspace file; edit the file to change it."


def _site(d: Any) -> str:
    return f"key {d.key}; origins {', '.join(d.origins)}"


def _queue(d: Any) -> str:
    skills = ", ".join(f"{s.skill}" for s in d.skills) or "no skills"
    return f"{'/'.join(d.media)}; {skills}; {d.strategy}; kpi {d.kpi or '–'}"


def _agent(d: Any) -> str:
    skills = ", ".join(f"{k} {v}" for k, v in sorted(d.skills.items())) or "no skills"
    return f"{d.display_name or d.name}: {skills}; {', '.join(d.languages) or 'no languages'}"


# slug -> (title, the documents by name, one line about one)
DOCS: Final[dict[str, tuple[str, Callable[[Workspace], dict[str, Any]], Callable[[Any], str]]]] = {
    "sites": ("Sites", lambda ws: ws.sites, _site),
    "queues": ("Queues", lambda ws: ws.queues, _queue),
    "agents": ("Agents", lambda ws: ws.agents, _agent),
    "content-offers": (
        "Content offers",
        lambda ws: ws.templates,
        lambda d: f"{d.layout} template",
    ),
    "bot-flows": ("Bot flows", lambda ws: ws.bot_flows, lambda d: d.description),
}


def _skills(ws: Workspace) -> list[dict[str, str]]:
    names = {s for a in ws.agents.values() for s in a.skills}
    names |= {n.skill for q in ws.queues.values() for n in q.skills}
    rows = []
    for s in sorted(names):
        agents = [f"{a.name} ({a.skills[s]})" for a in ws.agents.values() if s in a.skills]
        queues = [q.name for q in ws.queues.values() if any(n.skill == s for n in q.skills)]
        summary = f"agents: {', '.join(agents) or '–'}; queues: {', '.join(queues) or '–'}"
        rows.append({"name": s, "summary": summary})
    return rows


def _codes(ws: Workspace) -> list[dict[str, str]]:
    by_code: dict[str, list[str]] = {}
    for q in ws.queues.values():
        for c in q.wrap_up_codes:
            by_code.setdefault(c, []).append(q.name)
    kpis = {c: k.name for k in ws.kpis.values() for c in k.success_codes}
    return [
        {
            "name": c,
            "summary": f"queues: {', '.join(qs)}"
            + (f"; success of kpi {kpis[c]}" if c in kpis else ""),
        }
        for c, qs in sorted(by_code.items())
    ]


def content_offers(request: Request) -> list[dict[str, Any]]:
    """Every content offer an action map makes (workspace files and database), with the
    look its template gives it: what the offers page previews."""
    rt = runtime(request)
    out = []
    for doc, source in rt.rules.docs("actionMap"):
        content = doc.action.content if doc.action.type == "content" else None
        if content is None:
            continue
        template = rt.workspace.templates.get(content.template or "")
        style = template.style if template is not None else Style()
        out.append(
            {
                "map": doc.name,
                "source": source,
                "template": content.template,
                "layout": content.layout or (template.layout if template else "slide-in"),
                "title": content.title,
                "body": content.body,
                "cta": content.cta,
                "style": style,
            }
        )
    return out


def _routing(request: Request) -> list[dict[str, Any]]:
    """Each queue's predictive routing: settings, readiness, model, comparison test."""
    rt = runtime(request)
    router = rt.router
    registry = RoutingRegistry(rt.settings.data_dir / "routing-models")
    out = []
    for name, q in sorted(rt.rules.queues().items()):
        row: dict[str, Any] = {
            "name": name,
            "kpi": q.kpi,
            "predictive": q.predictive.model_dump(mode="json", by_alias=True),
            "comparison": q.comparison.model_dump(mode="json", by_alias=True),
            "readiness": None,
            "model": None,
        }
        if q.kpi and router is not None and q.kpi in router.kpis:
            row["readiness"] = kpi_readiness(router, q.kpi, name)
        try:
            active = registry.active_version(name)
            if active is not None:
                card = registry.card(name, active)
                row["model"] = {
                    "version": active,
                    "kpi": card.get("kpi"),
                    "interactions": card.get("interactions"),
                    "holdout": (card.get("model") or {}).get("holdout", {}),
                    "benefit": card.get("benefit"),
                    "notWorse": (card.get("activation") or {}).get("notWorse"),
                }
        except RegistryError as exc:
            row["model"] = {"error": str(exc)}
        out.append(row)
    return out


def console_workspace_router(e: Environment) -> APIRouter:
    api = APIRouter(prefix="/console", include_in_schema=False)

    @api.get("/content-offers")
    async def offers(request: Request, person: Reader) -> Response:
        ws = runtime(request).workspace
        rows = [
            {"name": n, "summary": f"{d.layout} template"} for n, d in sorted(ws.templates.items())
        ]
        return render(
            e,
            request,
            person,
            "offers.html",
            section="content-offers",
            title="Content offers",
            slug="content-offers",
            rows=rows,
            offers=content_offers(request),
            note=FILE_NOTE,
        )

    for slug, (title, docs, line) in DOCS.items():
        _doc_routes(api, e, slug, title, docs, line, listed=slug != "content-offers")

    for slug, title, rows in (
        ("skills", "Skills", _skills),
        ("wrap-up-codes", "Wrap-up codes", _codes),
    ):
        _derived_route(api, e, slug, title, rows)

    @api.get("/routing")
    async def routing(request: Request, person: Reader) -> Response:
        queues = await run_in_threadpool(_routing, request)
        return render(
            e, request, person, "routing.html", section="routing", queues=queues, note=FILE_NOTE
        )

    return api


def _doc_routes(
    api: APIRouter,
    e: Environment,
    slug: str,
    title: str,
    docs: Callable[[Workspace], dict[str, Any]],
    line: Callable[[Any], str],
    *,
    listed: bool = True,
) -> None:
    async def listing(request: Request, person: Reader) -> Response:
        found = sorted(docs(runtime(request).workspace).items())
        rows = [{"name": n, "summary": line(d)} for n, d in found]
        return render(
            e,
            request,
            person,
            "readonly_list.html",
            section=slug,
            title=title,
            slug=slug,
            rows=rows,
            detail=True,
            note=FILE_NOTE,
        )

    async def one(request: Request, name: str, person: Reader) -> Response:
        found = docs(runtime(request).workspace).get(name)
        if found is None:
            raise HTTPException(404, detail={"code": "not_found", "message": f"no {slug} {name!r}"})
        body = found.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        return render(
            e,
            request,
            person,
            "readonly_doc.html",
            section=slug,
            title=title,
            slug=slug,
            name=name,
            body=body,
            note=FILE_NOTE,
        )

    if listed:
        api.add_api_route(f"/{slug}", listing, methods=["GET"])
    api.add_api_route(f"/{slug}/{{name}}", one, methods=["GET"])


def _derived_route(
    api: APIRouter,
    e: Environment,
    slug: str,
    title: str,
    rows: Callable[[Workspace], list[dict[str, str]]],
) -> None:
    note = "Follows from the queues and agents of the workspace file; edit the file to change it."

    async def derived(request: Request, person: Reader) -> Response:
        return render(
            e,
            request,
            person,
            "readonly_list.html",
            section=slug,
            title=title,
            slug=slug,
            rows=rows(runtime(request).workspace),
            detail=False,
            note=note,
        )

    api.add_api_route(f"/{slug}", derived, methods=["GET"])
