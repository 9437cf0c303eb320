"""The admin API's error answers: every error is ``{"error": {"code", "message", ...}}``.

Handlers raise ``error(...)`` (or ``not_found``); the app's exception handlers, installed
once by ``install``, turn those, plain HTTP errors and request validation into that shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

_CODES = {
    400: "unreadable_body",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
    429: "rate_limited",
}


class ErrorDetail(BaseModel):
    """What went wrong: a stable ``code``, a sentence, and where (``path``) when known."""

    model_config = ConfigDict(extra="allow")  # e.g. ``errors``, ``limit``, ``needed``

    code: str
    message: str
    path: str | None = None


class ErrorBody(BaseModel):
    """Every error answer of the HTTP API."""

    error: ErrorDetail


_MEANING = {
    400: "The request cannot be read",
    401: "No valid API key (or not signed in)",
    403: "The key's scope (or the person's role) does not allow this",
    404: "Nothing by that name or id",
    405: "Not allowed on this resource (e.g. a definition from the workspace files)",
    409: "Conflicts with the current state (e.g. a definition from the workspace files)",
    413: "The body is too large",
    422: "The request is well-formed JSON but names something invalid (see error.path)",
    429: "Rate limit reached: retry after the Retry-After header's seconds",
    503: "Storage unavailable: retry after the Retry-After header's seconds",
}


def response(status: int) -> dict[str, Any]:
    """The OpenAPI answer ``status`` in the one error shape (a reference to ErrorBody)."""
    return {
        "description": _MEANING.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error answers ``statuses`` of a route or router."""
    return {s: {"model": ErrorBody, "description": _MEANING[s]} for s in statuses}


def error(status: int, code: str, message: str, **extra: Any) -> HTTPException:
    """An error answer; ``extra`` (``path``, ``errors``, …) goes beside code and message."""
    return HTTPException(status, detail={"code": code, "message": message, **extra})


def not_found(message: str) -> HTTPException:
    return error(404, "not_found", message)


async def _http_error(req: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = exc.headers
    if exc.status_code == 405 and headers and "Allow" in headers and isinstance(req.app, FastAPI):
        # Starlette's router names only the first route of the path; FastAPI makes one
        # route per method, so ``Allow`` would miss the others.
        from opportune.api.openapi import allowed_methods

        allow = allowed_methods(req.app, req.url.path)
        if allow:
            headers = {**(headers or {}), "Allow": ", ".join(allow)}
    detail = exc.detail
    if isinstance(detail, dict) and "code" in detail:
        body = {"error": detail}
    else:
        code = _CODES.get(exc.status_code, "error")
        body = {"error": {"code": code, "message": str(detail)}}
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


async def _invalid(_req: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    path = ".".join(str(p) for p in first.get("loc", ()))
    return JSONResponse(
        {
            "error": {
                "code": "invalid_request",
                "message": f"{path}: {first['msg']}",
                "path": path,
                "errors": [
                    {"path": ".".join(str(p) for p in e.get("loc", ())), "message": e["msg"]}
                    for e in errors
                ],
            }
        },
        status_code=422,
    )


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one JSON shape."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
