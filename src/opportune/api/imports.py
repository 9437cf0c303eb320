"""``POST /v1/import/events``: history over HTTP (admin API key), JSON lines in the body,
taken by the same import as ``opportune import events`` (engine/imports.py) through the
running server's pipeline, so its live state and writer see the imported visits."""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import Query, Request

from opportune.api.auth import admin_router
from opportune.api.errors import error
from opportune.engine.imports import HistoryImport, LineReader
from opportune.engine.ingest import Ingestor
from opportune.workspace import Site

# One request's body at most; a larger history goes in several requests (each is
# idempotent by event id, so a request that failed can be sent again as it is).
MAX_IMPORT_BYTES = 64 * 1024 * 1024

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-ndjson": {
                "schema": {"type": "string", "format": "binary"},
                "example": (
                    '{"visitorId": "8f14e45f", "id": "h-1", "type": "page_view", '
                    '"ts": 1709287200000, "url": "https://bank.example/"}\n'
                    '{"visitorId": "8f14e45f", "customerId": "C-1001", "id": "h-2", '
                    '"type": "custom", "ts": 1709287260000, "name": "loan_submitted"}\n'
                ),
            }
        },
        "description": "One event a line: the /v1/events event schema plus `visitorId` "
        "(required), `customerId`, `userAgent`, `ip`, `context`; `ts` the original time "
        "(UTC ms). See docs/import.md.",
    },
    "responses": {
        "200": {
            "description": "What was imported; lines refused are listed with their number",
            "content": {
                "application/json": {
                    "example": {
                        "lines": 2,
                        "imported": 3,
                        "duplicates": 0,
                        "refused": 0,
                        "identities": 1,
                        "visitors": 1,
                        "firstTs": 1709287200000,
                        "lastTs": 1709287260000,
                        "lastLine": 2,
                        "seconds": 0.004,
                        "cpuSeconds": 0.004,
                        "problems": [],
                    }
                }
            },
        }
    },
}


def imports_router(*, ingestor: Ingestor, sites: dict[str, Site], require_api_key: Any) -> Any:
    router = admin_router(require_api_key, tags=["import"])

    @router.post("/import/events", openapi_extra=_BODY)
    async def import_events(
        request: Request,
        site: Annotated[
            str | None, Query(description="The site (default: the workspace's only site)")
        ] = None,
    ) -> dict[str, Any]:
        """Import past events (JSON lines): kept with their own times and visits, feeding
        identity, segments and outcomes as live events do; no offers or webhooks. An
        event id already stored is skipped, so a request may be sent again."""
        target = _site(sites, site)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_IMPORT_BYTES:
                raise error(
                    413,
                    "body_too_large",
                    f"over {MAX_IMPORT_BYTES} bytes: send the lines in several requests",
                )
        if not bytes(body).strip():
            raise error(400, "empty", "no lines: send one JSON event a line")
        importer = HistoryImport(ingestor, target)
        summary = await importer.run(LineReader(io.BytesIO(bytes(body))))
        return summary.to_json()

    return router


def _site(sites: dict[str, Site], name: str | None) -> Site:
    if name is None:
        if len(sites) == 1:
            return next(iter(sites.values()))
        raise error(
            400, "site_required", f"say which site with ?site= ({', '.join(sorted(sites))})"
        )
    if name not in sites:
        raise error(
            404, "unknown_site", f"no site {name!r}; the sites are: {', '.join(sorted(sites))}"
        )
    return sites[name]
