"""The whole workspace as one YAML file: export (the workspace files' documents and the
database's, each marked with where it lives) and import.

An import is checked in full before anything is written: every document is validated by
the code the REST API uses (``parse_definition``; the rules compiled together; a KPI
against the queues using it), and every problem is reported with the document's index,
kind, name and the path in it. Only then are the database-editable documents (segments,
outcomes, action maps, KPIs, queue KPIs) created or replaced, in one transaction, each
audited as ``import``. Documents the workspace files own are never written: one that
differs from its file is reported as not applied (edit the file); an equal one is
unchanged. Documents in the database but not in the file are kept.

The page posts the file from a small script as ``application/x-yaml`` with the CSRF header
(no size limit of a form), or a pasted text as a form field.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from fastapi import APIRouter, HTTPException, Request
from jinja2 import Environment
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from opportune.api.console import Admin, Reader, render, runtime
from opportune.api.console_definitions import actor_of
from opportune.api.definitions import parse_definition
from opportune.api.people import form_fields
from opportune.core.conditions import ConditionError, format_path
from opportune.core.rules import RulesError
from opportune.engine.rules import Doc
from opportune.store.audit import Actor
from opportune.workspace import Workspace
from opportune.workspace.engagement import KpiDoc, QueueKpiDoc, kpi_fits_queue
from opportune.workspace.loader import KINDS

EDITABLE: Final = ("segment", "outcome", "actionMap", "kpi", "queueKpi")
MAX_IMPORT_BYTES: Final = 5 * 1024 * 1024
YAML_TYPES: Final = ("application/x-yaml", "application/yaml", "text/yaml", "text/plain")


def _file_docs(ws: Workspace) -> list[Any]:
    return [
        *ws.sites.values(),
        *ws.page_groups.values(),
        *ws.segments.values(),
        *ws.outcomes.values(),
        *ws.templates.values(),
        *ws.action_maps.values(),
        ws.engagement,
        *ws.queues.values(),
        *ws.agents.values(),
        *ws.kpis.values(),
        *ws.crms.values(),
        *ws.bot_flows.values(),
    ]


def doc_json(doc: Any) -> dict[str, Any]:
    """A document as the export writes it: kind and name first, defaults left out."""
    body = doc.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return {"kind": doc.kind, "name": doc.name, **body}


def export_yaml(request: Request) -> str:
    rt = runtime(request)
    parts = [
        "# Opportune workspace export: every document, from the workspace files and the\n"
        "# database. Importing it changes only the database's documents.\n"
    ]
    for doc, source in [(d, "workspace") for d in _file_docs(rt.workspace)] + [
        (d, "database") for d in sorted(rt.rules.api.values(), key=lambda d: (d.kind, d.name))
    ]:
        where = "the workspace files" if source == "workspace" else "the database"
        parts.append(f"---\n# {doc.kind} {doc.name}: in {where}\n")
        parts.append(yaml.safe_dump(doc_json(doc), sort_keys=False, allow_unicode=True))
    return "".join(parts)


@dataclass
class Plan:
    """What an import would do: problems (nothing is applied while there are any), the
    database documents to write, and what is left as it is."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    writes: list[tuple[str, Doc]] = field(default_factory=list)  # (create | update, doc)
    unchanged: list[str] = field(default_factory=list)
    not_applied: list[dict[str, Any]] = field(default_factory=list)  # file docs that differ

    def to_json(self) -> dict[str, Any]:
        return {
            "errors": self.errors,
            "applied": [{"action": a, "kind": d.kind, "name": d.name} for a, d in self.writes],
            "unchanged": self.unchanged,
            "notApplied": self.not_applied,
        }


def _problem(index: int, kind: str, name: str, path: str, message: str) -> dict[str, Any]:
    return {"index": index, "kind": kind, "name": name, "path": path, "message": message}


def _validated(kind: str, value: dict[str, Any]) -> Doc:
    if kind == "queueKpi":
        return QueueKpiDoc.model_validate(value)
    return parse_definition(kind, value)


def _file_twin(ws: Workspace, rules: Any, kind: str, name: str) -> Any:
    """The workspace files' document of this kind and name, if they have one."""
    if (kind, name) in rules.files:
        return rules.files[(kind, name)]
    return next((d for d in _file_docs(ws) if d.kind == kind and d.name == name), None)


def _read(plan: Plan, rt: Any, index: int, value: Any) -> Doc | None:
    """One document of the file: a database document to write, or ``None``."""
    if not isinstance(value, dict):
        plan.errors.append(_problem(index, "", "", "", "a document must be a mapping with a kind"))
        return None
    kind, name = str(value.get("kind", "")), str(value.get("name", ""))
    if kind not in KINDS and kind != "queueKpi":
        known = ", ".join(sorted([*KINDS, "queueKpi"]))
        plan.errors.append(_problem(index, kind, name, "kind", f"unknown kind; one of {known}"))
        return None
    twin = _file_twin(rt.workspace, rt.rules, kind, name)
    try:
        doc = _validated(kind, value) if kind in EDITABLE else KINDS[kind].model_validate(value)
    except HTTPException as exc:
        for e in exc.detail.get("errors", []):  # type: ignore[union-attr]
            plan.errors.append(_problem(index, kind, name, e["path"], e["message"]))
        return None
    except ValidationError as exc:
        for e in exc.errors():
            path = format_path([p for p in e["loc"] if isinstance(p, str | int)])
            message = "unknown field" if e["type"] == "extra_forbidden" else str(e["msg"])
            plan.errors.append(
                _problem(index, kind, name, path, message.removeprefix("Value error, "))
            )
        return None
    if twin is not None or kind not in EDITABLE:
        if twin is not None and twin.model_dump(mode="json") == doc.model_dump(mode="json"):
            plan.unchanged.append(f"{kind} {name}")
        else:
            why = "differs from" if twin is not None else "is not in"
            plan.not_applied.append(
                {
                    "index": index,
                    "kind": kind,
                    "name": name,
                    "message": f"{why} the workspace files; not applied: edit the files",
                }
            )
        return None
    return doc


def _check_kpis(plan: Plan, rt: Any, docs: dict[tuple[str, str], tuple[int, Doc]]) -> None:
    """A queue KPI names a known KPI that fits the queue, as the REST API checks."""
    kpis = {**rt.rules.kpis(), **{n: d for (k, n), (_, d) in docs.items() if k == "kpi"}}
    queues = rt.rules.queues()
    for (k, n), (index, d) in docs.items():
        if isinstance(d, QueueKpiDoc):
            if n not in queues:
                plan.errors.append(_problem(index, k, n, "name", f"no queue {n!r}"))
            elif d.kpi is not None and d.kpi not in kpis:
                plan.errors.append(_problem(index, k, n, "kpi", f"unknown kpi {d.kpi!r}"))
            elif d.kpi is not None and (problem := kpi_fits_queue(kpis[d.kpi], queues[n])):
                plan.errors.append(_problem(index, k, n, "kpi", problem))
        elif isinstance(d, KpiDoc):
            for q in queues.values():
                if q.kpi == n and (problem := kpi_fits_queue(d, q)):
                    plan.errors.append(_problem(index, k, n, "successCodes", problem))


def plan_import(rt: Any, text: str) -> Plan:
    """Check every document of ``text``; nothing is written here."""
    plan = Plan()
    try:
        values = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        plan.errors.append(_problem(0, "", "", "", f"not valid YAML: {where}{exc}"))
        return plan
    docs: dict[tuple[str, str], tuple[int, Doc]] = {}
    for index, value in enumerate((v for v in values if v is not None), start=1):
        doc = _read(plan, rt, index, value)
        if doc is None:
            continue
        if (doc.kind, doc.name) in docs:
            plan.errors.append(_problem(index, doc.kind, doc.name, "name", "twice in the file"))
        docs[(doc.kind, doc.name)] = (index, doc)
    _check_kpis(plan, rt, docs)
    for _index, doc in docs.values():
        stored = rt.rules.api.get((doc.kind, doc.name))
        if stored is not None and stored.model_dump(mode="json") == doc.model_dump(mode="json"):
            plan.unchanged.append(f"{doc.kind} {doc.name}")
        else:
            plan.writes.append(("create" if stored is None else "update", doc))
    if not plan.errors and plan.writes:
        _check_together(plan, rt, docs)
    return plan


def _check_together(plan: Plan, rt: Any, docs: dict[tuple[str, str], tuple[int, Doc]]) -> None:
    try:
        rt.rules.candidates([d for _, d in docs.values()])
    except RulesError as exc:
        for kind, name, message in exc.problems:
            index = docs.get((kind, name), (0, None))[0]
            plan.errors.append(_problem(index, kind, name, "condition", message))
    except ConditionError as exc:
        plan.errors.append(_problem(0, "", "", format_path(exc.path), exc.message))


def run_import(request: Request, text: str, actor: Actor) -> Plan:
    """Check ``text``, then (no problems) write its database documents in one transaction."""
    rt = runtime(request)
    plan = plan_import(rt, text)
    if not plan.errors and plan.writes:
        rt.rules.apply(
            [d for _, d in plan.writes],
            now_ms=int(time.time() * 1000),
            actor=actor,
            action="import",
        )
    return plan


def console_transfer_router(e: Environment) -> APIRouter:
    api = APIRouter(prefix="/console", include_in_schema=False)

    @api.get("/transfer")
    async def page(request: Request, person: Reader) -> Response:
        return render(e, request, person, "transfer.html", section="transfer", plan=None, text="")

    @api.get("/export")
    async def export(request: Request, person: Reader) -> Response:
        text = await run_in_threadpool(export_yaml, request)
        return Response(
            text,
            media_type="application/x-yaml; charset=utf-8",
            headers={
                "Content-Disposition": 'attachment; filename="opportune-workspace.yaml"',
                "Cache-Control": "no-store",
            },
        )

    @api.post("/import")
    async def import_(request: Request, person: Admin) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in YAML_TYPES:  # the page's script: the file itself, the CSRF header
            body = await request.body()
            if len(body) > MAX_IMPORT_BYTES:
                return JSONResponse({"errors": [_problem(0, "", "", "", "file over 5 MB")]}, 413)
            plan = await run_in_threadpool(
                run_import, request, body.decode("utf-8", "replace"), actor_of(person)
            )
            return JSONResponse(plan.to_json(), status_code=422 if plan.errors else 200)
        text = (await form_fields(request)).get("yaml", "")
        plan = await run_in_threadpool(run_import, request, text, actor_of(person))
        return render(
            e,
            request,
            person,
            "transfer.html",
            status=422 if plan.errors else 200,
            section="transfer",
            plan=plan.to_json(),
            text=text,
        )

    return api
