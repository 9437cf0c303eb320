"""Admin REST: segments and outcomes (create, read, update, delete, validate, estimate), and
a visitor's live journey (what the agent and Live Now views show).

Definitions from the workspace files are listed with ``"source": "workspace"`` and cannot
be changed here (409: edit the file); those created here are stored in the database and
reach every server process within a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query
from pydantic import ValidationError

from opportune.api.auth import admin_router
from opportune.api.errors import error, not_found
from opportune.api.inputs import now_ms
from opportune.core.conditions import ConditionError, format_path
from opportune.core.rules import RulesError
from opportune.engine.audience import estimate
from opportune.engine.context import rule_words, scores_in_words, visit_events
from opportune.engine.ingest import Ingestor
from opportune.engine.rules import MODELS, Doc, ReadOnlyDefinition, RuleBook
from opportune.store.audit import API_KEY, Actor
from opportune.workspace.documents import SegmentDoc

PLURAL = {"segments": "segment", "outcomes": "outcome", "action-maps": "actionMap"}


def _invalid(errors: list[dict[str, str]]) -> HTTPException:
    first = errors[0]
    message = f"{first['path']}: {first['message']}" if first["path"] else first["message"]
    return error(422, "invalid_definition", message, path=first["path"], errors=errors)


def parse_definition(kind: str, body: Any, name: str | None = None) -> Doc:
    """A validated document of ``kind`` from a JSON body; 422 naming every problem."""
    if not isinstance(body, dict):
        raise _invalid([{"path": "", "message": "the body must be a JSON object"}])
    body = {**body}
    body.setdefault("kind", kind)
    if name is not None and body.setdefault("name", name) != name:
        raise _invalid([{"path": "name", "message": f"does not match the path ({name!r})"}])
    if body["kind"] != kind:
        raise _invalid([{"path": "kind", "message": f"must be {kind!r} here"}])
    try:
        doc = MODELS[kind].model_validate(body)
    except ValidationError as exc:
        raise _invalid(
            [
                {
                    "path": format_path([p for p in e["loc"] if isinstance(p, str | int)]),
                    "message": "unknown field"
                    if e["type"] == "extra_forbidden"
                    else str(e["msg"]).removeprefix("Value error, "),
                }
                for e in exc.errors()
            ]
        ) from None
    try:
        doc.to_core()
    except ConditionError as exc:
        raise _invalid([{"path": format_path(exc.path), "message": exc.message}]) from None
    return doc


def check_together(rules: RuleBook, doc: Doc | None, remove: tuple[str, str] | None) -> None:
    """422 unless the rules still compile with ``doc`` added (``remove`` removed)."""
    try:
        rules.candidate(doc, remove=remove)
    except RulesError as exc:
        raise _invalid(
            [{"path": "condition", "message": f"{k} {n!r}: {m}"} for k, n, m in exc.problems]
        ) from None


def _json(doc: Doc, source: str) -> dict[str, Any]:
    return {**doc.model_dump(mode="json", by_alias=True), "source": source}


def definitions_router(
    *,
    rules: RuleBook,
    ingestor: Ingestor,
    require_api_key: Callable[..., None],
) -> APIRouter:
    router = admin_router(require_api_key, tags=["rules"])
    for collection, kind in PLURAL.items():
        _reads(router, rules, kind, collection)
        if kind != "actionMap":  # an action map has no audience to estimate
            _estimates(router, rules, ingestor, kind, collection)
        _writes(router, rules, kind, collection)

    @router.get("/visitors/{visitor_id}/live", tags=["journeys"])
    async def live_view(visitor_id: str) -> dict[str, Any]:
        """The visitor's live state: current visit, page, times, segments, outcomes."""
        return await _live(rules, ingestor, visitor_id)

    return router


def _found(rules: RuleBook, kind: str, name: str) -> tuple[Doc, str]:
    found = rules.get(kind, name)
    if found is None:
        raise not_found(f"{kind} {name!r} not found")
    return found


def _reads(router: APIRouter, rules: RuleBook, kind: str, collection: str) -> None:
    @router.get(f"/{collection}", name=f"list_{collection}")
    def list_all() -> dict[str, Any]:
        return {"items": [_json(d, s) for d, s in rules.docs(kind)]}

    @router.get(f"/{collection}/{{name}}", name=f"get_{kind}")
    def get_one(name: str) -> dict[str, Any]:
        return _json(*_found(rules, kind, name))

    @router.post(f"/{collection}/validate", name=f"validate_{kind}")
    def validate(body: Annotated[Any, Body()]) -> dict[str, Any]:
        doc = parse_definition(kind, body)
        check_together(rules, doc, None)
        return {"valid": True, "definition": _json(doc, "draft")}


def _estimates(
    router: APIRouter, rules: RuleBook, ingestor: Ingestor, kind: str, collection: str
) -> None:
    @router.post(f"/{collection}/estimate", name=f"estimate_draft_{kind}")
    def estimate_draft(
        body: Annotated[Any, Body()], days: Annotated[int, Query(ge=1, le=400)] = 7
    ) -> dict[str, Any]:
        doc = parse_definition(kind, body)
        check_together(rules, doc, None)
        rs = rules.candidate(doc)
        return estimate(
            ingestor.engine, rs, kind=kind, name=doc.name, days=days, now_ms=now_ms()
        ).to_json()

    @router.get(f"/{collection}/{{name}}/estimate", name=f"estimate_{kind}")
    def estimate_one(name: str, days: Annotated[int, Query(ge=1, le=400)] = 7) -> dict[str, Any]:
        _found(rules, kind, name)
        return estimate(
            ingestor.engine, rules.ruleset, kind=kind, name=name, days=days, now_ms=now_ms()
        ).to_json()


def _writes(router: APIRouter, rules: RuleBook, kind: str, collection: str) -> None:
    @router.post(f"/{collection}", status_code=201, name=f"create_{kind}")
    def create(body: Annotated[Any, Body()]) -> dict[str, Any]:
        doc = parse_definition(kind, body)
        if rules.get(kind, doc.name) is not None:
            raise error(409, "already_exists", f"{kind} {doc.name!r} exists; PUT to replace it")
        return _save(rules, doc)

    @router.put(f"/{collection}/{{name}}", name=f"put_{kind}")
    def put(name: str, body: Annotated[Any, Body()]) -> dict[str, Any]:
        return _save(rules, parse_definition(kind, body, name))

    @router.delete(f"/{collection}/{{name}}", name=f"delete_{kind}")
    def delete(name: str) -> dict[str, Any]:
        delete_definition(rules, kind, name, actor=API_KEY)
        return {"deleted": {"kind": kind, "name": name}}


def delete_definition(rules: RuleBook, kind: str, name: str, *, actor: Actor) -> None:
    """Delete a database definition (404 unknown, 409 a workspace file's, 422 others need
    it), audited as ``actor``'s: the REST API's rule and the console's."""
    editable(_found(rules, kind, name))
    check_together(rules, None, (kind, name))
    try:
        rules.delete(kind, name, now_ms=now_ms(), actor=actor)
    except ReadOnlyDefinition as exc:
        raise read_only(exc) from None


def editable(found: tuple[Doc, str] | None) -> None:
    """Refuse to change a definition the workspace files hold."""
    if found is not None and found[1] == "workspace":
        doc = found[0]
        raise read_only(
            ReadOnlyDefinition(f"{doc.kind} {doc.name!r} is defined in the workspace files")
        )


def _save(rules: RuleBook, doc: Doc) -> dict[str, Any]:
    save_definition(rules, doc, actor=API_KEY)
    return _json(doc, "api")


def save_definition(rules: RuleBook, doc: Doc, *, actor: Actor) -> None:
    """Create or replace a database definition (409 a workspace file's, 422 it would not
    work with the others), audited as ``actor``'s: the REST API's rule and the console's."""
    editable(rules.get(doc.kind, doc.name))
    check_together(rules, doc, None)
    try:
        rules.put(doc, now_ms=now_ms(), actor=actor)
    except ReadOnlyDefinition as exc:
        raise read_only(exc) from None


def _segment_json(rules: RuleBook, state: Any, name: str, since: int) -> dict[str, Any]:
    seg = rules.get("segment", name)
    doc = seg[0] if seg else None
    assert doc is None or isinstance(doc, SegmentDoc)
    return {
        "name": name,
        "since": since,
        "scope": doc.scope if doc else "session",
        "description": doc.description if doc else "",
        "colour": doc.colour if doc else None,
        "visibleToAgents": doc.visible_to_agents if doc else True,
        **({"expiresAt": state.assignments[name][1]} if name in state.assignments else {}),
    }


async def _live(rules: RuleBook, ingestor: Ingestor, visitor_id: str) -> dict[str, Any]:
    now = now_ms()
    state = await ingestor.live.peek(visitor_id, now)
    if state is None:
        raise not_found(f"visitor {visitor_id!r} not found")
    rs = rules.ruleset
    j = state.journey
    if j is not None and not j.is_current(rs.fingerprint) and rs:
        j = await asyncio.to_thread(ingestor.rebuild_journey, visitor_id, state)
    track = state.track
    current = j is not None and j.session_id == track.session_id
    timeout_ms = ingestor.settings.session_timeout_s * 1000
    members = rs.members(j if current else None, state.assignments, now)
    return {
        "visitorId": visitor_id,
        "customerId": state.customer_id,
        "sessionId": track.session_id,
        "visitNumber": track.number,
        "active": track.session_id is not None and now - track.last_at <= timeout_ms,
        "startedAt": track.started_at or None,
        "lastEventAt": track.last_at or None,
        "timeOnSiteMs": (track.last_at - track.started_at) if track.session_id else 0,
        "currentPage": j.url if current and j else None,
        "pageSince": j.page_at if current and j and j.url else None,
        "pageViews": j.counts.get("page_view", 0) if current and j else 0,
        "events": sum(j.counts.values()) if current and j else 0,
        "segments": [_segment_json(rules, state, n, since) for n, since in members.items()],
        "outcomes": [
            {"name": n, "achievedAt": at, "value": value}
            for n, (at, value) in (j.outcomes.items() if current and j else ())
        ],
        "scores": (await _scores(j, ingestor, rules, members, track.last_at))
        if current and j
        else [],
    }


async def _scores(
    j: Any, ingestor: Ingestor, rules: RuleBook, members: dict[str, int], at: int
) -> list[dict[str, Any]]:
    """Each outcome's score with the features that weigh most in it ("why this score"),
    each feature also said in words (``text``) from the visit's own events."""
    if not j.scores:
        return []
    events = await asyncio.to_thread(visit_events, ingestor.engine, j.session_id)
    return scores_in_words(
        ingestor.scorer,
        j,
        members,
        at,
        events=events,
        pages=rules.ruleset.pages,
        known=rule_words(rules),
    )


def read_only(exc: ReadOnlyDefinition) -> HTTPException:
    """409: a workspace definition is edited in its file, not over the API."""
    return error(409, "defined_in_workspace", f"{exc}; edit that file instead")
