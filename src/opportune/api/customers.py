"""Admin REST: visitors, customers, sessions and events; merge and split; GDPR.

Handlers are plain ``def``: FastAPI runs them in its thread pool, so database calls never
block the event loop the tracking hot path shares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import Field
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from opportune.api.auth import admin_router
from opportune.api.errors import error, not_found
from opportune.api.inputs import CamelIn, now_ms
from opportune.core.identity import Refused, normalise_customer_id, normalise_email, normalise_phone
from opportune.store import customers as store
from opportune.store import gdpr, journeys
from opportune.store.customers import CustomerNotFound
from opportune.store.journeys import MAX_LIMIT, BadCursor


def _not_found(what: str, ident: str | int) -> HTTPException:
    return not_found(f"{what} {ident!r} not found")


def _bad(message: str, path: str, code: str = "invalid_request") -> HTTPException:
    return error(422, code, message, path=path)


class MergeRequest(CamelIn):
    source_id: str = Field(min_length=1, max_length=32)
    target_id: str = Field(min_length=1, max_length=32)
    preview: bool = True


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
GetEngine = Callable[[], Engine]
Evict = Callable[[list[str]], None]


def customers_router(
    *,
    get_engine: GetEngine,
    on_evict: Evict,
    require_api_key: Callable[..., None],
) -> APIRouter:
    """The router; ``on_evict`` is told which visitors' live state is stale after a change."""
    router = admin_router(require_api_key, tags=["journeys"])
    _visitor_routes(router, get_engine)
    _customer_routes(router, get_engine)
    _identity_routes(router, get_engine, on_evict)
    return router


def _page(fn: Callable[[], journeys.Page]) -> dict[str, Any]:
    """One page of a listing, with the cursor of the next; 422 for a bad cursor."""
    try:
        p = fn()
    except BadCursor as exc:
        raise _bad(str(exc), "cursor") from exc
    return {"items": p.items, "nextCursor": p.next_cursor}


def _sessions(conn: Connection, limit: int, cursor: str | None, **owner: str) -> dict[str, Any]:
    """A page of the visitor's or the customer's sessions, newest first."""
    return _page(lambda: journeys.session_page(conn, limit=limit, cursor=cursor, **owner))


def _visitor_routes(router: APIRouter, get_engine: GetEngine) -> None:
    @router.get("/visitors/{visitor_id}")
    def get_visitor(visitor_id: str) -> dict[str, Any]:
        with get_engine().connect() as conn:
            return _visitor(conn, visitor_id)

    @router.get("/visitors/{visitor_id}/sessions")
    def visitor_sessions(
        visitor_id: str, limit: Limit = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        with get_engine().connect() as conn:
            _visitor(conn, visitor_id)
            return _sessions(conn, limit, cursor, visitor_id=visitor_id)

    @router.get("/sessions/{session_id}")
    def get_session(session_id: str) -> dict[str, Any]:
        with get_engine().connect() as conn:
            return _session(conn, session_id)

    @router.get("/sessions/{session_id}/events")
    def session_events(
        session_id: str, limit: Limit = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        with get_engine().connect() as conn:
            sess = _session(conn, session_id)
            return _page(lambda: journeys.event_page(conn, sess, limit=limit, cursor=cursor))


def _visitor(conn: Connection, visitor_id: str) -> Any:
    row = journeys.get_visitor(conn, visitor_id)
    if row is None:
        raise _not_found("visitor", visitor_id)
    return row


def _session(conn: Connection, session_id: str) -> Any:
    row = journeys.get_session(conn, session_id)
    if row is None:
        raise _not_found("session", session_id)
    return row


def _customer(conn: Connection, customer_id: str) -> Any:
    row = journeys.get_customer(conn, customer_id)
    if row is None:
        raise _not_found("customer", customer_id)
    return row


def _identifier(
    email: str | None, phone: str | None, customer_id: str | None, region: str
) -> tuple[str, str]:
    """The one identifier looked up, normalised as identify stores it: (kind, value)."""
    given = [
        (k, v)
        for k, v in (("email", email), ("phone", phone), ("customer_id", customer_id))
        if v is not None
    ]
    if len(given) != 1:
        raise _bad("give exactly one of email, phone, customerId", "query")
    kind, raw = given[0]
    norm = (
        normalise_email(raw)
        if kind == "email"
        else normalise_phone(raw, region)
        if kind == "phone"
        else normalise_customer_id(raw)
    )
    if isinstance(norm, Refused):
        raise _bad(norm.reason, kind if kind != "customer_id" else "customerId")
    return kind, norm


def _customer_routes(router: APIRouter, get_engine: GetEngine) -> None:
    @router.get("/customers/lookup")
    def lookup(
        email: str | None = None,
        phone: str | None = None,
        customer_id: Annotated[str | None, Query(alias="customerId")] = None,
        region: Annotated[str, Query(pattern=r"^[A-Z]{2}$")] = "US",
    ) -> dict[str, Any]:
        kind, norm = _identifier(email, phone, customer_id, region)
        with get_engine().connect() as conn:
            return {"customers": journeys.find_customers(conn, kind, norm)}

    @router.get("/customers/{customer_id}")
    def get_customer(customer_id: str) -> dict[str, Any]:
        with get_engine().connect() as conn:
            return _customer(conn, customer_id)

    @router.get("/customers/{customer_id}/sessions")
    def customer_sessions(
        customer_id: str, limit: Limit = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        with get_engine().connect() as conn:
            _customer(conn, customer_id)
            return _sessions(conn, limit, cursor, customer_id=customer_id)

    @router.get("/customers/{customer_id}/export")
    def export(customer_id: str) -> dict[str, Any]:
        try:
            with get_engine().connect() as conn:
                return gdpr.export_customer(conn, customer_id)
        except CustomerNotFound as exc:
            raise _not_found("customer", customer_id) from exc


def _identity_routes(router: APIRouter, get_engine: GetEngine, on_evict: Evict) -> None:
    @router.delete("/customers/{customer_id}")
    def erase(customer_id: str) -> dict[str, Any]:
        try:
            with get_engine().begin() as conn:
                done = gdpr.erase_customer(conn, customer_id, now_ms=now_ms())
        except CustomerNotFound as exc:
            raise _not_found("customer", customer_id) from exc
        on_evict(done.visitor_ids)
        return {
            "erased": {
                "customers": done.customers,
                "identifiers": done.identifiers,
                "visitors": done.visitors,
                "sessions": done.sessions,
                "events": done.events,
                "conversations": done.conversations,
            }
        }

    @router.post("/customers/merge")
    def merge(body: MergeRequest) -> dict[str, Any]:
        try:
            with get_engine().begin() as conn:
                result, stale = _merge(conn, body)
        except CustomerNotFound as exc:
            raise _not_found("customer", exc.customer_id) from exc
        except store.MergeRefused as exc:
            raise error(409, "merge_refused", str(exc)) from exc
        if not body.preview:
            on_evict(stale)
        return result

    @router.post("/identity-log/{log_id}/split")
    def split(log_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> dict[str, Any]:
        try:
            with get_engine().begin() as conn:
                split_id, stale = store.split(conn, log_id, now_ms())
        except store.SplitRefused as exc:
            raise error(409, "split_refused", str(exc)) from exc
        except LookupError as exc:
            raise _not_found("identity log entry", log_id) from exc
        on_evict(stale)
        return {"split": {"logId": split_id, "merge": log_id}}


def _merge(conn: Connection, body: MergeRequest) -> tuple[dict[str, Any], list[str]]:
    """The merge's preview, carried out unless only a preview was asked for."""
    preview = store.preview_merge(conn, body.source_id, body.target_id)
    result: dict[str, Any] = {
        "preview": {
            "sourceId": preview.source,
            "targetId": preview.target,
            "visitors": preview.visitors,
            "sessions": preview.sessions,
            "identifiers": preview.identifiers,
            "blocking": preview.blocking,
        }
    }
    if body.preview:
        return result, []
    log_id, stale = store.merge(conn, body.source_id, body.target_id, now_ms())
    result["merged"] = {"logId": log_id}
    return result, stale
