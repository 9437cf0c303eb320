"""Structured logs (``OPPORTUNE_LOG_FORMAT=json``): every log record one JSON line, and one
line per request with its request id, for a deployment whose logs a machine reads.

Each request gets an id: the ``X-Request-Id`` the proxy sent (nginx's ``$request_id``,
docs/deployment.md) when it is a plain token, else a new one; the answer carries it back
in ``X-Request-Id`` and every record logged while the request runs carries it too.

What a line never holds: headers (cookies, ``X-API-Key``, ``Authorization``), query
values (a lookup by email, a site key: only the parameters' names are logged), bodies.
Secrets the process knows (the API key, webhook secrets, the passwords in the database
and Redis URLs) are replaced by ``***`` wherever a message or a traceback would show them.

>>> import json, logging
>>> f = JsonFormatter(secrets=["s3cret"])
>>> r = logging.LogRecord("x", logging.ERROR, "f.py", 1, "login with %s", ("s3cret",), None)
>>> line = json.loads(f.format(r))
>>> line["level"], line["msg"]
('error', 'login with ***')
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.engine import make_url

from opportune.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ACCESS = logging.getLogger("opportune.access")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Fields of a record that are logging's own, not something a caller passed in ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request id, the fields
    passed in ``extra``, and the traceback, with the process's secrets masked."""

    def __init__(self, *, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": self._mask(record.getMessage()),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid is not None:
            out["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self._mask(self.formatException(record.exc_info))
        return json.dumps(out, default=str)

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def secrets_of(settings: Settings) -> list[str]:
    """The values no log line may show: the admin API key, webhook secrets, passwords."""
    found = [settings.api_key, *settings.webhook_secrets.values()]
    for url in (settings.database_url, settings.redis_url):
        if url:
            try:
                password = make_url(url).password
            except Exception:  # not a URL SQLAlchemy reads: nothing to take from it
                password = None
            if password:
                found.append(str(password))
    return [s for s in found if s]


def configure_logging(settings: Settings) -> None:
    """Set the process's logging for ``settings.log_format`` (``text``: left as it is)."""
    if settings.log_format != "json":
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets=secrets_of(settings)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # ours says more, and no query values


class RequestLog:
    """ASGI middleware: an id per request (``X-Request-Id``) and one log line when it ends:
    method, path, the query's parameter names, status, duration in ms, request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500 if kind == "http" else 403
        header = (b"x-request-id", rid.encode())

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            elif message["type"] == "websocket.accept":
                status = 101
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            ACCESS.info(
                "request",
                extra={
                    "method": scope.get("method", "GET") if kind == "http" else "WEBSOCKET",
                    "path": scope["path"],
                    "query": _query_names(scope.get("query_string", b"")),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "request_id": rid,
                },
            )
            request_id.reset(token)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _TOKEN.fullmatch(text) else None
    return None


def _query_names(raw: bytes) -> list[str]:
    """The query's parameter names, never their values (an email, a site key)."""
    if not raw:
        return []
    names = {k for k, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True)}
    return sorted(n[:64] for n in names)[:20]
