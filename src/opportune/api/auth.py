"""Admin authentication: one API key, sent as the ``X-API-Key`` header."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import APIRouter, Depends, Header, HTTPException


def api_key_dependency(expected: str) -> Callable[[str | None], None]:
    """A FastAPI dependency refusing requests without the configured key."""

    def require_api_key(x_api_key: str | None = Header(default=None)) -> None:
        if not expected:
            raise HTTPException(
                status_code=401,
                detail={
                    "code": "admin_disabled",
                    "message": "admin API disabled: set OPPORTUNE_API_KEY",
                },
            )
        if x_api_key is None:
            raise HTTPException(
                status_code=401,
                detail={"code": "missing_api_key", "message": "send the X-API-Key header"},
            )
        if not hmac.compare_digest(x_api_key.encode(), expected.encode()):
            raise HTTPException(
                status_code=401, detail={"code": "bad_api_key", "message": "wrong API key"}
            )

    return require_api_key


def admin_router(require_api_key: Callable[..., None], *, tags: list[str]) -> APIRouter:
    """An ``/v1`` router every route of which requires the API key."""
    return APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=list(tags))
