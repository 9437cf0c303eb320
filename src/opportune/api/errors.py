"""The admin API's error answers: every error is ``{"error": {"code", "message", ...}}``.

Handlers raise ``error(...)`` (or ``not_found``); the app's exception handlers, installed
once by ``install``, turn those, plain HTTP errors and request validation into that shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
}


def error(status: int, code: str, message: str, **extra: Any) -> HTTPException:
    """An error answer; ``extra`` (``path``, ``errors``, …) goes beside code and message."""
    return HTTPException(status, detail={"code": code, "message": message, **extra})


def not_found(message: str) -> HTTPException:
    return error(404, "not_found", message)


async def _http_error(_req: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if isinstance(detail, dict) and "code" in detail:
        body = {"error": detail}
    else:
        code = _CODES.get(exc.status_code, "error")
        body = {"error": {"code": code, "message": str(detail)}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


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
