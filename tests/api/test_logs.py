"""JSON logs (``OPPORTUNE_LOG_FORMAT=json``): one line per request with its id, method,
path, the query's names, status and duration — and never a key, a password, a cookie, a
token or a query value, even in a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from opportune.api.app import create_app
from opportune.api.logs import JsonFormatter, RequestLog, secrets_of
from opportune.settings import Settings

API_KEY = "admin-Key-0c4f1e"
HOOK_SECRET = "hook-Secret-77ab"
EMAIL = "private.person@example.com"


class Kept(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def parsed(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.lines]


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[TestClient, Kept, Settings]]:
    settings = Settings(
        data_dir=tmp_path,
        api_key=API_KEY,
        webhook_secrets={"crm": HOOK_SECRET},
        log_format="json",
    )
    kept = Kept(JsonFormatter(secrets=secrets_of(settings)))
    root = logging.getLogger()
    level = root.level
    root.addHandler(kept)
    root.setLevel(logging.INFO)
    try:
        with TestClient(RequestLog(create_app(settings))) as c:
            yield c, kept, settings
    finally:
        root.removeHandler(kept)
        root.setLevel(level)


def access(kept: Kept) -> list[dict[str, Any]]:
    return [x for x in kept.parsed() if x["logger"] == "opportune.access"]


def test_one_line_per_request_with_its_id_and_nothing_secret(logged: Any) -> None:
    c, kept, _ = logged
    c.cookies.set("opp_session", "cookie-Token-5512")
    r = c.get(
        "/v1/customers/lookup",
        params={"email": EMAIL},
        headers={"x-api-key": API_KEY, "authorization": f"Bearer {API_KEY}"},
    )
    rid = r.headers["x-request-id"]
    assert len(rid) == 32
    (line,) = [x for x in access(kept) if x["request_id"] == rid]
    assert line["method"] == "GET" and line["path"] == "/v1/customers/lookup"
    assert line["query"] == ["email"] and line["status"] == r.status_code
    assert line["duration_ms"] >= 0 and line["level"] == "info"
    text = "\n".join(kept.lines)
    for secret in (API_KEY, EMAIL, "cookie-Token-5512"):
        assert secret not in text


def test_the_hot_path_is_logged_and_a_proxy_id_is_kept(logged: Any) -> None:
    c, kept, _ = logged
    body = {"siteKey": "demo-site-key", "visitorId": "v", "sentAt": 1, "events": []}
    r = c.post("/v1/events", content=json.dumps(body), headers={"x-request-id": "nginx-abc.1"})
    assert r.headers["x-request-id"] == "nginx-abc.1"
    assert any(
        x["path"] == "/v1/events" and x["request_id"] == "nginx-abc.1" and x["method"] == "POST"
        for x in access(kept)
    )
    # An id that is no plain token (a header injection, a huge value) is replaced.
    r = c.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces"
    assert len(r.headers["x-request-id"]) == 32


def test_a_socket_is_one_line_when_it_ends(logged: Any) -> None:
    c, kept, _ = logged
    with c.websocket_connect("/v1/chat?siteKey=demo-site-key&visitorId=secret-v") as ws:
        ws.send_text(json.dumps({"type": "hello", "visitorId": "v"}))
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()
    lines = [x for x in access(kept) if x["path"] == "/v1/chat"]
    assert len(lines) == 1
    assert lines[0]["method"] == "WEBSOCKET" and lines[0]["status"] == 101
    assert lines[0]["query"] == ["siteKey", "visitorId"]
    assert "secret-v" not in "\n".join(kept.lines)


def test_secrets_in_a_message_or_a_traceback_are_masked(logged: Any) -> None:
    _, kept, settings = logged
    log = logging.getLogger("opportune.test")
    try:
        raise RuntimeError(f"webhook refused header {HOOK_SECRET}")
    except RuntimeError:
        log.exception("call with key %s failed", settings.api_key)
    line = kept.parsed()[-1]
    assert line["msg"] == "call with key *** failed"
    assert "RuntimeError: webhook refused header ***" in line["exc"]
    assert HOOK_SECRET not in kept.lines[-1] and API_KEY not in kept.lines[-1]


def test_passwords_of_the_database_and_redis_urls_are_secrets(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql://app:db-Pass-1@db.internal/opportune",
        redis_url="redis://:redis-Pass-2@cache:6379/0",
    )
    assert set(secrets_of(settings)) == {"db-Pass-1", "redis-Pass-2"}
