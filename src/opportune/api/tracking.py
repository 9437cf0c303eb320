"""``POST /v1/events``: the hot path, a raw ASGI endpoint in front of the FastAPI app; and
the widget's two public endpoints beside it, ``POST /v1/actions`` (reports) and
``POST /v1/recheck``, checked by the same site key and origins.

It skips the framework's middleware and request objects: on a 2-core machine the HTTP
layer is the largest cost per batch after the database, so it is kept to the minimum.

Rate limits (``engine/rate_limits.py``) are checked once the site is known: a token per
request from the client IP's bucket and the site's (all its keys share one); over either,
429 ``rate_limited`` naming the limit, with ``Retry-After``.

CORS is decided per site: the answer echoes the request's Origin only when the site
allows it. Browsers always send Origin on a cross-site POST; a request without one comes
from a server or a tool, which could claim any origin anyway, so it is not refused for that.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from typing import Any

import msgspec

from opportune.core.events import BATCH_DECODER, RECHECK_DECODER, REPORTS_DECODER
from opportune.engine import metrics
from opportune.engine.ingest import IngestError, Ingestor
from opportune.engine.rate_limits import Limit, Limiter
from opportune.store.writer import WriterClosed
from opportune.workspace import Site
from opportune.workspace.site_keys import SiteKeys

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, body, headers

log = logging.getLogger(__name__)
_ENCODE = msgspec.json.Encoder()
_PATH = re.compile(r"- at `(\$[^`]*)`")
_JSON = (b"content-type", b"application/json")
_PREFLIGHT = [
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"content-type"),
    (b"access-control-max-age", b"86400"),
]
PATH = "/v1/events"
# With the widget's endpoints: reports of what the visitor did with an offer, and rechecks.
_DECODERS: dict[str, Any] = {
    PATH: BATCH_DECODER,
    "/v1/actions": REPORTS_DECODER,
    "/v1/recheck": RECHECK_DECODER,
}


class TrackingEndpoint:
    """Serves ``/v1/events`` itself and hands every other request to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        ingestor: Ingestor,
        sites: SiteKeys,
        max_body: int,
        *,
        limiter: Limiter | None = None,
        per_ip: Limit | None = None,
        per_site: Limit | None = None,
    ) -> None:
        self.app = app
        self.ingestor = ingestor
        self.sites = sites
        self.sites_by_key = sites.current
        self.all_origins = frozenset(o for s in sites.current.values() for o in s.origins)
        self.max_body = max_body
        self.limiter = limiter if per_ip or per_site else None
        self.per_ip = per_ip
        self.per_site = per_site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in _DECODERS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
        method = scope["method"]
        if method == "OPTIONS":
            status, body, extra = self._preflight(origin, own)
        elif method == "POST":
            status, body, extra = await self._post(scope, receive, headers, origin, own)
        else:
            status, body, extra = _error(405, "method_not_allowed", "use POST", cors=[])
            extra.append((b"allow", b"POST, OPTIONS"))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", str(len(body)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})
        if scope["path"] == PATH:
            metrics.answered(status, time.perf_counter() - started)

    def _cors(
        self, origin: str | None, site: Site | None, own: str | None = None
    ) -> list[tuple[bytes, bytes]]:
        vary = [(b"vary", b"Origin")]
        if origin is None:
            return vary
        # A page this server served itself (the demo site) is always allowed.
        allowed = origin == own or (
            site.allows_origin(origin)
            if site
            else (origin.rstrip("/") in self.all_origins or "*" in self.all_origins)
        )
        if not allowed:
            return vary
        return [(b"access-control-allow-origin", origin.encode("latin-1")), *vary]

    def _preflight(self, origin: str | None, own: str) -> Answer:
        cors = self._cors(origin, None, own)
        if len(cors) == 1:
            return _error(403, "origin_not_allowed", f"origin {origin!r} is not allowed", cors=cors)
        return 204, b"", [*cors, *_PREFLIGHT]

    async def _post(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        origin: str | None,
        own: str,
    ) -> Answer:
        body = await self._read(receive, headers, origin, own)
        if not isinstance(body, bytes):
            return body
        path = scope["path"]
        batch = _decode(path, body, cors=self._cors(origin, None, own))
        if isinstance(batch, tuple):
            return batch
        site = self.sites_by_key.get(batch.site_key)
        if site is None:
            found = self.sites.find(batch.site_key, now_ms=int(time.time() * 1000))
            if not isinstance(found, Site):
                return _unknown_key(found, cors=self._cors(origin, None, own))
            site = found
        cors = self._cors(origin, site, own)
        if origin is not None and len(cors) == 1:
            return _error(
                403,
                "origin_not_allowed",
                f"origin {origin!r} is not allowed for site {site.name!r}",
                cors=cors,
            )
        client = scope.get("client")
        peer = client[0] if client else None
        if self.limiter is not None:
            checks = []
            if self.per_ip is not None:
                ip = self.ingestor.geo.client_ip(headers, peer) or "-"
                checks.append(("ip:" + ip, self.per_ip))
            if self.per_site is not None:
                checks.append(("site:" + site.name, self.per_site))
            refusal = await self.limiter.check(checks)
            if refusal is not None:
                return _error(
                    429,
                    "rate_limited",
                    f"over the {refusal.limit} rate limit; retry after {refusal.retry_after} s",
                    limit=refusal.limit,
                    cors=[*cors, (b"retry-after", refusal.retry_after.encode())],
                )
        return await self._handle(path, batch, site, headers, peer, cors)

    async def _read(
        self, receive: Receive, headers: dict[str, str], origin: str | None, own: str
    ) -> bytes | Answer:
        """The whole body, or the error answer when it is too large or the client left."""
        declared = headers.get("content-length", "")
        too_large = (413, "body_too_large", f"body over {self.max_body} bytes")
        if declared.isdigit() and int(declared) > self.max_body:
            return _error(*too_large, cors=self._cors(origin, None, own))
        chunks = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _error(400, "disconnected", "client went away", cors=[])
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return _error(*too_large, cors=self._cors(origin, None, own))
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _handle(
        self,
        path: str,
        batch: Any,
        site: Site,
        headers: dict[str, str],
        peer: str | None,
        cors: list[tuple[bytes, bytes]],
    ) -> Answer:
        """Hand the decoded body to the ingestor; a failure is an error answer to retry."""
        now_ms = int(time.time() * 1000)
        try:
            if path == PATH:
                result = await self.ingestor.ingest(
                    batch, site, now_ms=now_ms, headers=headers, peer=peer
                )
            elif path == "/v1/recheck":
                result = await self.ingestor.recheck(batch, site, now_ms=now_ms)
            else:
                return (
                    200,
                    _ENCODE.encode(await self.ingestor.report(batch, site, now_ms=now_ms)),
                    cors,
                )
        except IngestError as exc:
            return _error(exc.status, exc.code, exc.message, exc.path, cors=cors)
        except WriterClosed:
            return _error(
                503,
                "shutting_down",
                "server is shutting down; retry",
                cors=[*cors, (b"retry-after", b"1")],
            )
        except Exception as exc:  # the database failed: nothing was accepted, the client retries
            log.exception("ingest failed")
            metrics.storage_error(exc, "ingest")
            return _error(
                503,
                "storage_unavailable",
                "events not stored; retry later",
                cors=[*cors, (b"retry-after", b"2")],
            )
        if path == PATH:
            metrics.counted(
                accepted=result.accepted,
                duplicates=result.duplicates,
                refusals=[r.reason for r in result.refused],
            )
        return 200, _ENCODE.encode(result.to_json()), cors


class SitesNow(Mapping[str, Site]):
    """The sites by every key valid now (a rotation's previous keys until their end), for
    the widget's and the chat's lookups; iterating gives the current keys."""

    def __init__(self, sites: SiteKeys) -> None:
        self.sites = sites

    def __getitem__(self, key: str) -> Site:
        site = self.sites.get(key, int(time.time() * 1000))
        if site is None:
            raise KeyError(key)
        return site

    def __iter__(self) -> Iterator[str]:
        return iter(self.sites.current)

    def __len__(self) -> int:
        return len(self.sites.current)


def _decode(path: str, body: bytes, *, cors: list[tuple[bytes, bytes]]) -> Any:
    """The body decoded for ``path``, or the error answer (a tuple) naming the problem."""
    try:
        return _DECODERS[path].decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        m = _PATH.search(text)
        return _error(
            400, "invalid_batch", _PATH.sub("", text).strip(), m.group(1) if m else None, cors=cors
        )
    except msgspec.DecodeError as exc:
        return _error(400, "invalid_json", f"body is not valid JSON: {exc}", cors=cors)


def _unknown_key(found: Any, *, cors: list[tuple[bytes, bytes]]) -> Answer:
    """403 for a key no site has, or a previous key past its rotation's end."""
    if found is None:
        return _error(403, "unknown_site_key", "no site has this key", "$.siteKey", cors=cors)
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(found.until_ms / 1000))
    return _error(
        403,
        "site_key_expired",
        f"this key of site {found.site!r} was replaced and stopped working at {until}; "
        "use the site's current key",
        "$.siteKey",
        cors=cors,
    )


def _error(
    status: int,
    code: str,
    message: str,
    path: str | None = None,
    *,
    cors: list[tuple[bytes, bytes]],
    limit: str | None = None,
) -> Answer:
    err: dict[str, Any] = {"code": code, "message": message}
    if path:
        err["path"] = path
    if limit:
        err["limit"] = limit
    return status, _ENCODE.encode({"error": err}), list(cors)
