"""Admin authentication: an API key sent as the ``X-API-Key`` header, with a scope.

Keys made by ``opportune keys create`` live hashed in the database (``store/api_keys.py``)
with a scope; ``OPPORTUNE_API_KEY``, when set, is one more key of scope ``admin``. What a
request needs:

- ``read``: GET, and the POSTs that only check or estimate (``…/validate``, ``…/estimate``);
- ``admin``: a customer's export and erasure, merge and split (personal data, identity);
- ``write``: every other change.

A key past its rate limit (``OPPORTUNE_RATE_LIMIT_ADMIN_PER_KEY``) gets 429 with
``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any, Final

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from sqlalchemy import Engine

from opportune.api.errors import error
from opportune.engine.rate_limits import Limit, Limiter
from opportune.store import api_keys
from opportune.store.api_keys import Scope

# (method, route) that need the admin scope: personal data and identity.
_ADMIN: Final = frozenset(
    {
        ("GET", "/v1/customers/{customer_id}/export"),
        ("DELETE", "/v1/customers/{customer_id}"),
        ("POST", "/v1/customers/merge"),
        ("POST", "/v1/identity-log/{log_id}/split"),
    }
)
SETTINGS_KEY_ID: Final = "settings"  # OPPORTUNE_API_KEY's id in limits and logs


def needed_scope(method: str, route: str) -> Scope:
    """The scope a request of ``method`` on ``route`` (the path template) needs.

    >>> needed_scope("GET", "/v1/segments"), needed_scope("POST", "/v1/segments/validate")
    ('read', 'read')
    >>> needed_scope("PUT", "/v1/segments/{name}"), needed_scope("POST", "/v1/customers/merge")
    ('write', 'admin')
    """
    if (method, route) in _ADMIN:
        return "admin"
    if method in ("GET", "HEAD") or route.endswith(("/validate", "/estimate")):
        return "read"
    return "write"


def api_key_dependency(
    expected: str,
    *,
    engine: Engine | None = None,
    limiter: Limiter | None = None,
    limit: Limit | None = None,
) -> Callable[..., Any]:
    """A FastAPI dependency refusing requests without a key of the scope they need.

    ``expected`` is ``OPPORTUNE_API_KEY`` (empty: none); ``engine`` holds the keys of
    ``opportune keys``; ``limit`` (with ``limiter``) is each key's rate limit."""

    async def require_api_key(
        request: Request, x_api_key: str | None = Header(default=None)
    ) -> None:
        if x_api_key is None:
            raise error(401, "missing_api_key", "send the X-API-Key header")
        found = await _identify(x_api_key, expected, engine)
        if found is None:
            if not expected:
                raise error(
                    401,
                    "bad_api_key",
                    "wrong API key (OPPORTUNE_API_KEY is not set: create keys with "
                    "`opportune keys create`)",
                )
            raise error(401, "bad_api_key", "wrong API key")
        key_id, scope = found
        route = request.scope.get("route")
        method = request.method
        need = needed_scope(method, getattr(route, "path", request.url.path))
        if not api_keys.allows(scope, need):
            raise error(
                403,
                "insufficient_scope",
                f"this key has scope {scope!r}; {method} {getattr(route, 'path', '')} needs "
                f"scope {need!r} (opportune keys create --scope {need})",
                needed=need,
                scope=scope,
            )
        if limiter is not None and limit is not None:
            refusal = await limiter.check([("key:" + key_id, limit)])
            if refusal is not None:
                raise HTTPException(
                    429,
                    detail={
                        "code": "rate_limited",
                        "message": f"over the {refusal.limit} rate limit; retry after "
                        f"{refusal.retry_after} s",
                        "limit": refusal.limit,
                    },
                    headers={"Retry-After": refusal.retry_after},
                )

    return require_api_key


async def _identify(key: str, expected: str, engine: Engine | None) -> tuple[str, Scope] | None:
    """(key id, scope) of a valid key, else None."""
    if expected and hmac.compare_digest(key.encode(), expected.encode()):
        return SETTINGS_KEY_ID, "admin"
    if engine is None or not key.startswith(api_keys.PREFIX):
        return None

    def look() -> Any:
        with engine.connect() as conn:
            return api_keys.find(conn, key)

    row = await asyncio.to_thread(look)
    return (row.id, row.scope) if row is not None else None


def admin_router(require_api_key: Callable[..., Any], *, tags: list[str]) -> APIRouter:
    """An ``/v1`` router every route of which requires the API key."""
    return APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=list(tags))
