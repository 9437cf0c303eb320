"""``GET /v1/widget?siteKey=KEY``: the site's widget look and words, public and cacheable.

The widget asks for it once, when it is first loaded on a page. Like ``/v1/actions``, the
answer carries CORS headers only for the site's own origins (or the server's own pages);
it is the same for every visitor, so browsers keep it and revalidate with its ETag.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response

from opportune.workspace import Site

CACHE_CONTROL = "public, max-age=300"
_JSON = "application/json"


def widget_document(site: Site) -> dict[str, Any]:
    """The public part of a site's ``widget`` block, camelCase, without unset values."""
    w = site.widget
    out: dict[str, Any] = {
        "theme": w.theme.model_dump(exclude_none=True),
        "texts": {locale: dict(words) for locale, words in w.texts.items()},
    }
    if w.name:
        out["name"] = w.name
    if w.logo:
        out["logo"] = w.logo
    return out


def _error(status: int, code: str, message: str, headers: dict[str, str]) -> Response:
    body = {"error": {"code": code, "message": message, "path": "$.siteKey"}}
    return Response(json.dumps(body), status_code=status, media_type=_JSON, headers=headers)


def widget_config_router(sites_by_key: Mapping[str, Site]) -> APIRouter:
    """The route; ``sites_by_key`` is the workspace's (sites are fixed while it runs)."""
    router = APIRouter(include_in_schema=False)
    bodies: dict[str, tuple[bytes, str]] = {}
    for site in sites_by_key.values():
        raw = json.dumps(widget_document(site), separators=(",", ":"), sort_keys=True).encode()
        bodies[site.name] = (raw, f'"{hashlib.sha256(raw).hexdigest()[:20]}"')

    @router.get("/v1/widget")
    async def widget_config(request: Request) -> Response:
        headers = {"vary": "Origin"}
        key = request.query_params.get("siteKey")
        if not key:
            return _error(400, "missing_site_key", "give ?siteKey=", headers)
        site = sites_by_key.get(key)
        if site is None:
            return _error(404, "unknown_site_key", "no site has this key", headers)
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin is not None and (origin == own or site.allows_origin(origin)):
            headers["access-control-allow-origin"] = origin
        body, etag = bodies[site.name]
        headers |= {"cache-control": CACHE_CONTROL, "etag": etag}
        wanted = request.headers.get("if-none-match", "")
        if etag in (t.strip().removeprefix("W/") for t in wanted.split(",")):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=_JSON, headers=headers)

    return router
