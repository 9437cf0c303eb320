"""Admin REST: visitors, customers, sessions and events; merge and split; GDPR.

Handlers are plain ``def``: FastAPI runs them in its thread pool, so database calls never
block the event loop the tracking hot path shares.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy import Engine

from opportune.core.identity import Refused, normalise_customer_id, normalise_email, normalise_phone
from opportune.store import customers as store
from opportune.store import journeys
from opportune.store.journeys import MAX_LIMIT, BadCursor


def _not_found(what: str, ident: str | int) -> HTTPException:
    return HTTPException(
        404, detail={"code": "not_found", "message": f"{what} {ident!r} not found"}
    )


def _bad(message: str, path: str, code: str = "invalid_request") -> HTTPException:
    return HTTPException(422, detail={"code": code, "message": message, "path": path})


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    source_id: str = Field(min_length=1, max_length=32)
    target_id: str = Field(min_length=1, max_length=32)
    preview: bool = True


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


def customers_router(
    *,
    get_engine: Callable[[], Engine],
    on_evict: Callable[[list[str]], None],
    require_api_key: Callable[..., None],
) -> APIRouter:
    """The router; ``on_evict`` is told which visitors' live state is stale after a change."""
    router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["journeys"])

    def page(p: journeys.Page) -> dict[str, Any]:
        return {"items": p.items, "nextCursor": p.next_cursor}

    def cursor_errors(fn: Callable[[], journeys.Page]) -> dict[str, Any]:
        try:
            return page(fn())
        except BadCursor as exc:
            raise _bad(str(exc), "cursor") from exc

    @router.get("/visitors/{visitor_id}")
    def get_visitor(visitor_id: str) -> dict[str, Any]:
        with get_engine().connect() as conn:
            row = journeys.get_visitor(conn, visitor_id)
        if row is None:
            raise _not_found("visitor", visitor_id)
        return row

    @router.get("/visitors/{visitor_id}/sessions")
    def visitor_sessions(
        visitor_id: str, limit: Limit = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        with get_engine().connect() as conn:
            if journeys.get_visitor(conn, visitor_id) is None:
                raise _not_found("visitor", visitor_id)
            return cursor_errors(
                lambda: journeys.session_page(
                    conn, visitor_id=visitor_id, limit=limit, cursor=cursor
                )
            )

    @router.get("/sessions/{session_id}")
    def get_session(session_id: str) -> dict[str, Any]:
        with get_engine().connect() as conn:
            row = journeys.get_session(conn, session_id)
        if row is None:
            raise _not_found("session", session_id)
        return row

    @router.get("/sessions/{session_id}/events")
    def session_events(
        session_id: str, limit: Limit = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        with get_engine().connect() as conn:
            sess = journeys.get_session(conn, session_id)
            if sess is None:
                raise _not_found("session", session_id)
            return cursor_errors(
                lambda: journeys.event_page(conn, sess, limit=limit, cursor=cursor)
            )

    @router.get("/customers/lookup")
    def lookup(
        email: str | None = None,
        phone: str | None = None,
        customer_id: Annotated[str | None, Query(alias="customerId")] = None,
        region: Annotated[str, Query(pattern=r"^[A-Z]{2}$")] = "US",
    ) -> dict[str, Any]:
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
        with get_engine().connect() as conn:
            return {"customers": journeys.find_customers(conn, kind, norm)}

    @router.get("/customers/{customer_id}")
    def get_customer(customer_id: str) -> dict[str, Any]:
        with get_engine().connect() as conn:
            row = journeys.get_customer(conn, customer_id)
        if row is None:
            raise _not_found("customer", customer_id)
        return row

    @router.get("/customers/{customer_id}/sessions")
    def customer_sessions(
        customer_id: str, limit: Limit = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        with get_engine().connect() as conn:
            if journeys.get_customer(conn, customer_id) is None:
                raise _not_found("customer", customer_id)
            return cursor_errors(
                lambda: journeys.session_page(
                    conn, customer_id=customer_id, limit=limit, cursor=cursor
                )
            )

    @router.get("/customers/{customer_id}/export")
    def export(customer_id: str) -> dict[str, Any]:
        try:
            with get_engine().connect() as conn:
                return store.export_customer(conn, customer_id)
        except store.CustomerNotFound as exc:
            raise _not_found("customer", customer_id) from exc

    @router.delete("/customers/{customer_id}")
    def erase(customer_id: str) -> dict[str, Any]:
        try:
            with get_engine().begin() as conn:
                done = store.erase_customer(conn, customer_id, now_ms=int(time.time() * 1000))
        except store.CustomerNotFound as exc:
            raise _not_found("customer", customer_id) from exc
        on_evict(done.visitor_ids)
        return {
            "erased": {
                "customers": done.customers,
                "identifiers": done.identifiers,
                "visitors": done.visitors,
                "sessions": done.sessions,
                "events": done.events,
            }
        }

    @router.post("/customers/merge")
    def merge(body: MergeRequest) -> dict[str, Any]:
        try:
            with get_engine().begin() as conn:
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
                    return result
                log_id, stale = store.merge(
                    conn, body.source_id, body.target_id, int(time.time() * 1000)
                )
        except store.CustomerNotFound as exc:
            raise _not_found("customer", exc.customer_id) from exc
        except store.MergeRefused as exc:
            raise HTTPException(409, detail={"code": "merge_refused", "message": str(exc)}) from exc
        on_evict(stale)
        result["merged"] = {"logId": log_id}
        return result

    @router.post("/identity-log/{log_id}/split")
    def split(log_id: int) -> dict[str, Any]:
        try:
            with get_engine().begin() as conn:
                split_id, stale = store.split(conn, log_id, int(time.time() * 1000))
        except store.SplitRefused as exc:
            raise HTTPException(409, detail={"code": "split_refused", "message": str(exc)}) from exc
        except LookupError as exc:
            raise _not_found("identity log entry", log_id) from exc
        on_evict(stale)
        return {"split": {"logId": split_id, "merge": log_id}}

    return router
