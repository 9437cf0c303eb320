"""The console's pages for the database-editable kinds: segments, outcomes, action maps,
KPIs and queue KPIs: list, create, edit, delete.

A form is the name and the document's body as YAML; it is validated by the REST API's own
code (``api/definitions.parse_definition``, ``RuleBook.candidate`` through
``save_definition``, ``api/kpis.save_kpi``), so an error reads as the API's does, shown
beside the field or under the body with the path it names. Changes go through the same
functions as the API's and are audited as the signed-in admin's. A document from the
workspace files is shown read only: it is changed by editing the file.

Extras per kind: a segment's or outcome's live audience estimate (``POST
/console/{kind}/_estimate``, JSON, from ``console.js``), an outcome's model card
(``console_models``), an action map's "test against this visitor" (the REST explain).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import yaml
from fastapi import APIRouter, HTTPException, Request
from jinja2 import Environment
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, RedirectResponse, Response

from opportune.api.console import Admin, Reader, render, runtime
from opportune.api.console_models import model_summary
from opportune.api.definitions import (
    check_together,
    delete_definition,
    editable,
    parse_definition,
    save_definition,
)
from opportune.api.engagement import explain_visitor
from opportune.api.kpis import delete_kpi, save_kpi, set_queue_kpi
from opportune.api.people import form_fields
from opportune.core.conditions import format_path
from opportune.engine.audience import estimate
from opportune.engine.rules import Doc
from opportune.store.audit import Actor
from opportune.workspace.engagement import KpiDoc, QueueKpiDoc


@dataclass(frozen=True, slots=True)
class Kind:
    slug: str
    kind: str
    title: str
    singular: str
    skeleton: str  # a new document's body


KINDS: Final = {
    k.slug: k
    for k in (
        Kind(
            "segments", "segment", "Segments", "segment",
            "description: Visiting from a phone\ncondition:\n  attribute: device\n"
            "  equals: mobile\n",
        ),
        Kind(
            "outcomes", "outcome", "Outcomes", "outcome",
            "description: Signed up\ncondition:\n  event:\n    type: custom\n"
            "    name: signed_up\n",
        ),
        Kind(
            "action-maps", "actionMap", "Action maps", "action map",
            "description: Help searchers\ntrigger:\n  segment: mobile-visitors\npriority: 10\n"
            "holdoutPercent: 10\naction:\n  type: content\n  content:\n    title: Need a hand?\n"
            "    body: Our guide walks you through it.\n",
        ),
        Kind(
            "kpis", "kpi", "KPIs", "KPI",
            "type: sales_conversion\nsuccessCodes:\n- loan-sold\n",
        ),
        Kind("queue-kpis", "queueKpi", "Queue KPIs", "queue KPI", "kpi: loan-conversion\n"),
    )
}  # fmt: skip
ESTIMATED: Final = ("segment", "outcome")


def _now_ms() -> int:
    return int(time.time() * 1000)


def actor_of(person: Any) -> Actor:
    return Actor(name=f"{person.user.name} <{person.user.email}>", id=person.user.id)


def _problems(exc: HTTPException) -> tuple[str, list[dict[str, str]]]:
    """An API error as the form shows it: its message, and each problem with its path."""
    detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
    errors = detail.get("errors") or [
        {"path": detail.get("path", ""), "message": detail["message"]}
    ]
    return str(detail["message"]), [{"path": e["path"], "message": e["message"]} for e in errors]


def _body(text: str) -> dict[str, Any]:
    """The document body typed in the form (YAML or JSON); 422 naming the line if not."""
    try:
        value = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise HTTPException(
            422,
            detail={"message": f"document: not valid YAML: {where}{problem}", "path": "document"},
        ) from None
    if not isinstance(value, dict):
        raise HTTPException(
            422,
            detail={
                "message": "document: must be a mapping of fields (name: value lines)",
                "path": "document",
            },
        )
    return value


def read_doc(kind: Kind, form: dict[str, str], name: str | None) -> Doc:
    """The form's document: ``name`` from the path when editing, else the name field."""
    body = _body(form.get("document", ""))
    if name is None:
        typed = form.get("name", "").strip()
        if typed:
            body.setdefault("name", typed)
        elif "name" not in body:
            raise HTTPException(422, detail={"message": "name: Field required", "path": "name"})
    if kind.kind == "queueKpi":  # the REST API takes it as {"kpi": ...} on the queue
        body = {**body}
        body.setdefault("kind", "queueKpi")
        body.setdefault("name", name)
        try:
            return QueueKpiDoc.model_validate(body)
        except ValidationError as exc:
            errors = [
                {
                    "path": format_path([p for p in e["loc"] if isinstance(p, str | int)]),
                    "message": "unknown field" if e["type"] == "extra_forbidden" else e["msg"],
                }
                for e in exc.errors()
            ]
            first = errors[0]
            message = f"{first['path']}: {first['message']}" if first["path"] else first["message"]
            raise HTTPException(422, detail={"message": message, "errors": errors}) from None
    return parse_definition(kind.kind, body, name)


def _save(request: Request, kind: Kind, doc: Doc, actor: Actor) -> None:
    rt = runtime(request)
    if isinstance(doc, KpiDoc):
        save_kpi(rt.router, doc, actor=actor)
    elif isinstance(doc, QueueKpiDoc):
        set_queue_kpi(rt.router, doc.name, doc.kpi, actor=actor)
    else:
        save_definition(rt.rules, doc, actor=actor)


def _delete(request: Request, kind: Kind, name: str, actor: Actor) -> None:
    rt = runtime(request)
    if kind.kind == "kpi":
        delete_kpi(rt.router, name, actor=actor)
    elif kind.kind == "queueKpi":  # back to the KPI of the queue's document
        found = rt.rules.get("queueKpi", name)
        if found is None:
            raise HTTPException(404, detail={"message": f"queueKpi {name!r} not found"})
        editable(found)
        rt.rules.delete("queueKpi", name, now_ms=_now_ms(), actor=actor)
    else:
        delete_definition(rt.rules, kind.kind, name, actor=actor)


def body_of(doc: Doc) -> str:
    """The document's body as the form edits it: YAML, without kind and name."""
    data = doc.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    data.pop("kind", None)
    data.pop("name", None)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _rows(request: Request, kind: Kind) -> list[dict[str, Any]]:
    rt = runtime(request)
    rows = [
        {
            "name": d.name,
            "source": src,
            "summary": getattr(d, "description", "") or _summary(d),
        }
        for d, src in rt.rules.docs(kind.kind)
    ]
    if kind.kind == "queueKpi":  # every queue: its KPI now, set here or in its document
        set_here = {r["name"] for r in rows}
        for name, q in sorted(rt.rules.queues().items()):
            if name not in set_here:
                rows.append({"name": name, "source": "queue", "summary": f"kpi: {q.kpi}"})
        rows.sort(key=lambda r: r["name"])
    return rows


def _summary(doc: Doc) -> str:
    if isinstance(doc, KpiDoc):
        return f"{doc.type}, tracked by {doc.tracking}"
    if isinstance(doc, QueueKpiDoc):
        return f"kpi: {doc.kpi}"
    return ""


def _found(request: Request, kind: Kind, name: str) -> tuple[Doc | None, str]:
    """The document and its source; a queue's own KPI shows as a workspace queue KPI."""
    rt = runtime(request)
    found = rt.rules.get(kind.kind, name)
    if found is not None:
        return found
    if kind.kind == "queueKpi" and name in rt.workspace.queues:
        # The KPI of the queue's own document: saving here sets one over it.
        return QueueKpiDoc(name=name, kpi=rt.workspace.queues[name].kpi), "queue"
    raise HTTPException(404, detail={"message": f"no {kind.singular} {name!r}"})


async def _explain(request: Request, map_name: str, visitor: str) -> dict[str, Any]:
    """This map's verdict for ``visitor`` now, and what it did in the visit so far."""
    rt = runtime(request)
    try:
        found = await explain_visitor(rt.ingestor, visitor, _now_ms())
    except HTTPException as exc:
        return {"visitor": visitor, "error": _problems(exc)[0]}
    mine = next((m for m in found["maps"] if m["name"] == map_name), None)
    if mine is None:
        return {"visitor": visitor, "error": "the visitor has no visit in progress"}
    why = str(mine["now"])
    return {"visitor": visitor, "gate": gate_of(why), "why": why, "history": mine["history"]}


def gate_of(why: str) -> str:
    """Where a map stands for a visitor, from the decision's words (``core/actionmaps``).

    >>> gate_of("blocked: chat queue closed"), gate_of("qualified, held out (holdout group)")
    ('blocked', 'qualified')
    """
    for prefix, gate in (
        ("not qualified", "not qualified"),
        ("blocked", "blocked"),
        ("disabled", "disabled"),
        ("already", "already engaged"),
        ("qualified", "qualified"),
    ):
        if why.startswith(prefix):
            return gate
    return "offers now"


def _page_routes(api: APIRouter, e: Environment, kind: Kind) -> None:
    slug = kind.slug

    def page(request: Request, person: Any, template: str, status: int = 200, **ctx: Any) -> Any:
        return render(e, request, person, template, status=status, section=slug, k=kind, **ctx)

    _reading_routes(api, page, kind)
    _writing_routes(api, page, kind)


Page = Callable[..., Any]


def _reading_routes(api: APIRouter, page: Page, kind: Kind) -> None:
    """The list, the empty form and a document (with its model card or map test)."""
    slug = kind.slug

    @api.get(f"/{slug}")
    async def listing(request: Request, person: Reader) -> Response:
        return page(request, person, "list.html", rows=_rows(request, kind))

    @api.get(f"/{slug}/_new")
    async def new(request: Request, person: Admin) -> Response:
        return page(
            request,
            person,
            "doc.html",
            is_new=True,
            name="",
            source="api",
            document=kind.skeleton,
            errors=[],
            message="",
        )

    @api.get(f"/{slug}/{{name}}")
    async def show(
        request: Request,
        name: str,
        person: Reader,
        visitor: str | None = None,
        saved: str | None = None,
    ) -> Response:
        doc, source = _found(request, kind, name)
        extra: dict[str, Any] = {}
        if kind.kind == "outcome":
            extra["model"] = await run_in_threadpool(model_summary, request, name)
        if kind.kind == "actionMap" and visitor:
            extra["test"] = await _explain(request, name, visitor.strip()[:128])
        return page(
            request,
            person,
            "doc.html",
            is_new=False,
            name=name,
            source=source,
            document=body_of(doc) if doc else "",
            errors=[],
            message="",
            saved=bool(saved),
            **extra,
        )


def _writing_routes(api: APIRouter, page: Page, kind: Kind) -> None:
    """Create, update and delete; a refusal shows the form again with the REST API's
    errors beside the fields they name."""
    slug = kind.slug

    def again(
        request: Request, person: Any, exc: HTTPException, *, is_new: bool, name: str,
        source: str, document: str,
    ) -> Any:  # fmt: skip
        message, errors = _problems(exc)
        return page(
            request,
            person,
            "doc.html",
            exc.status_code,
            is_new=is_new,
            name=name,
            source=source,
            document=document,
            errors=errors,
            message=message,
        )

    @api.post(f"/{slug}/_new")
    async def create(request: Request, person: Admin) -> Response:
        form = await form_fields(request)
        try:
            doc = read_doc(kind, form, None)
            if runtime(request).rules.get(kind.kind, doc.name) is not None:
                raise HTTPException(
                    409,
                    detail={
                        "message": f"name: {kind.kind} {doc.name!r} exists; edit it instead",
                        "path": "name",
                    },
                )
            await run_in_threadpool(_save, request, kind, doc, actor_of(person))
        except HTTPException as exc:
            return again(
                request, person, exc, is_new=True, name=form.get("name", ""), source="api",
                document=form.get("document", ""),
            )  # fmt: skip
        return RedirectResponse(f"/console/{slug}/{doc.name}?saved=1", status_code=303)

    @api.post(f"/{slug}/{{name}}")
    async def update(request: Request, name: str, person: Admin) -> Response:
        _, source = _found(request, kind, name)
        form = await form_fields(request)
        try:
            doc = read_doc(kind, form, name)
            await run_in_threadpool(_save, request, kind, doc, actor_of(person))
        except HTTPException as exc:
            return again(
                request, person, exc, is_new=False, name=name, source=source,
                document=form.get("document", ""),
            )  # fmt: skip
        return RedirectResponse(f"/console/{slug}/{name}?saved=1", status_code=303)

    @api.post(f"/{slug}/{{name}}/delete")
    async def remove(request: Request, name: str, person: Admin) -> Response:
        doc, source = _found(request, kind, name)
        try:
            await run_in_threadpool(_delete, request, kind, name, actor_of(person))
        except HTTPException as exc:
            return again(
                request, person, exc, is_new=False, name=name, source=source,
                document=body_of(doc) if doc else "",
            )  # fmt: skip
        return RedirectResponse(f"/console/{slug}", status_code=303)


def _estimate_route(api: APIRouter, kind: Kind) -> None:
    @api.post(f"/{kind.slug}/_estimate")
    async def draft_estimate(request: Request, person: Reader) -> Response:
        """The audience of the document being edited (JSON: ``name``, ``document``), or
        ``valid: false`` with the REST API's errors."""
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return JSONResponse({"error": "send {name, document} as JSON"}, status_code=422)
        form = {"name": str(payload.get("name") or ""), "document": str(payload.get("document"))}
        rt = runtime(request)

        def run() -> dict[str, Any]:
            doc = read_doc(kind, form, None)
            check_together(rt.rules, doc, None)
            rs = rt.rules.candidate(doc)
            return estimate(
                rt.ingestor.engine, rs, kind=kind.kind, name=doc.name, days=7, now_ms=_now_ms()
            ).to_json()

        try:
            return JSONResponse(await run_in_threadpool(run))
        except HTTPException as exc:
            message, errors = _problems(exc)
            # 200: a draft that does not validate yet is the usual case while typing, not a
            # failed request (the browser would log each one as an error).
            return JSONResponse({"valid": False, "error": message, "errors": errors})


def console_definitions_router(e: Environment) -> APIRouter:
    api = APIRouter(prefix="/console", include_in_schema=False)
    for kind in KINDS.values():
        if kind.kind in ESTIMATED:
            _estimate_route(api, kind)
        _page_routes(api, e, kind)
    return api
