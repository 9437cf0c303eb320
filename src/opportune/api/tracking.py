"""``POST /v1/events``: the hot path, a plain Starlette endpoint (no FastAPI body model).

CORS is decided per site: the answer echoes the request's Origin only when the site
allows it. Browsers always send Origin on a cross-site POST; a request without one comes
from a server or a tool, which could claim any origin anyway, so it is not refused for that.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from opportune.core.events import BATCH_DECODER
from opportune.engine.ingest import IngestError, Ingestor
from opportune.store.writer import WriterClosed
from opportune.workspace import Site

_ENCODE = msgspec.json.Encoder()
_PATH = re.compile(r"- at `(\$[^`]*)`")
_CORS_HEADERS = {
    "access-control-allow-methods": "POST, OPTIONS",
    "access-control-allow-headers": "content-type",
    "access-control-max-age": "86400",
}


def _error(
    status: int,
    code: str,
    message: str,
    path: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if path:
        err["path"] = path
    return Response(
        _ENCODE.encode({"error": err}), status, headers=headers, media_type="application/json"
    )


class TrackingEndpoint:
    def __init__(
        self,
        ingestor: Ingestor,
        sites_by_key: dict[str, Site],
        all_origins: frozenset[str],
        max_body: int,
    ) -> None:
        self.ingestor = ingestor
        self.sites_by_key = sites_by_key
        self.all_origins = all_origins
        self.max_body = max_body

    def _cors(self, origin: str | None, site: Site | None) -> dict[str, str]:
        if origin is None:
            return {"vary": "Origin"}
        allowed = site.allows_origin(origin) if site else origin.rstrip("/") in self.all_origins
        if not allowed:
            return {"vary": "Origin"}
        return {"access-control-allow-origin": origin, "vary": "Origin"}

    async def preflight(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        headers = self._cors(origin, None)
        if "access-control-allow-origin" not in headers:
            return _error(
                403, "origin_not_allowed", f"origin {origin!r} is not allowed", headers=headers
            )
        return Response(status_code=204, headers={**headers, **_CORS_HEADERS})

    async def post(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return _error(
                413,
                "body_too_large",
                f"body over {self.max_body} bytes",
                headers=self._cors(origin, None),
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                return _error(
                    413,
                    "body_too_large",
                    f"body over {self.max_body} bytes",
                    headers=self._cors(origin, None),
                )
        try:
            batch = BATCH_DECODER.decode(body)
        except msgspec.ValidationError as exc:
            text = str(exc)
            m = _PATH.search(text)
            return _error(
                400,
                "invalid_batch",
                _PATH.sub("", text).strip(),
                m.group(1) if m else None,
                headers=self._cors(origin, None),
            )
        except msgspec.DecodeError as exc:
            return _error(
                400,
                "invalid_json",
                f"body is not valid JSON: {exc}",
                headers=self._cors(origin, None),
            )
        site = self.sites_by_key.get(batch.site_key)
        if site is None:
            return _error(
                403,
                "unknown_site_key",
                "no site has this key",
                "$.siteKey",
                headers=self._cors(origin, None),
            )
        cors = self._cors(origin, site)
        if origin is not None and "access-control-allow-origin" not in cors:
            return _error(
                403,
                "origin_not_allowed",
                f"origin {origin!r} is not allowed for site {site.name!r}",
                headers=cors,
            )
        peer = request.client.host if request.client else None
        try:
            result = await self.ingestor.ingest(
                batch,
                site,
                now_ms=int(time.time() * 1000),
                headers=request.headers,
                peer=peer,
            )
        except IngestError as exc:
            return _error(exc.status, exc.code, exc.message, exc.path, headers=cors)
        except WriterClosed:
            return _error(
                503,
                "shutting_down",
                "server is shutting down; retry",
                headers={**cors, "retry-after": "1"},
            )
        except Exception:  # the database failed: nothing was accepted, the client retries
            import logging

            logging.getLogger(__name__).exception("ingest failed")
            return _error(
                503,
                "storage_unavailable",
                "events not stored; retry later",
                headers={**cors, "retry-after": "2"},
            )
        return Response(
            _ENCODE.encode(result.to_json()), 200, headers=cors, media_type="application/json"
        )
