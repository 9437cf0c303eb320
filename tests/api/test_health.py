"""``/healthz`` and ``/readyz``: ready when the database answers, Redis answers (when
configured) and the schema is at the migrations' head; 503 naming what is not."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from opportune.api.app import create_app
from opportune.settings import Settings
from opportune.store.db import make_engine, schema_revisions

REDIS_URL = "redis://127.0.0.1:6379/14"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, data_dir=tmp_path, api_key="k")


def test_ready_on_a_migrated_database(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        r = c.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["notReady"] == []
    assert body["checks"]["database"] == {"ok": True}
    migrations = body["checks"]["migrations"]
    assert migrations["ok"] and migrations["current"] == migrations["head"]
    assert "redis" not in body["checks"]  # not configured: not checked


def test_a_schema_behind_the_head_is_not_ready(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url())
    _, head = schema_revisions(engine)
    with TestClient(create_app(settings)) as c:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        try:
            r = c.get("/readyz")
        finally:
            with engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = :h"), {"h": head[0]})
            engine.dispose()
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready" and body["notReady"] == ["migrations"]
    m = body["checks"]["migrations"]
    assert m["current"] == ["0001"] and m["head"] == list(head)
    assert "opportune migrate" in m["error"]


def test_a_database_gone_is_not_ready(tmp_path: Path) -> None:
    db = tmp_path / "gone.db"
    settings = Settings(database_url=f"sqlite:///{db}", data_dir=tmp_path)
    with TestClient(create_app(settings)) as c:
        assert c.get("/readyz").status_code == 200
        # A folder where the file was: SQLite can no longer open a connection to it.
        c.app.ingestor.engine.dispose()
        db.rename(tmp_path / "elsewhere.db")
        db.mkdir()
        try:
            r = c.get("/readyz")
        finally:  # back, so that the server shuts down as usual
            db.rmdir()
            (tmp_path / "elsewhere.db").rename(db)
    assert r.status_code == 503
    body = r.json()
    assert body["notReady"] == ["database", "migrations"]
    assert body["checks"]["database"] == {"ok": False, "error": "unreachable"}
    assert str(db) not in r.text  # the detail is logged, not shown to whoever asks


@pytest.mark.redis
def test_redis_is_checked_when_configured(tmp_path: Path) -> None:
    ok = Settings(data_dir=tmp_path / "a", redis_url=REDIS_URL, redis_prefix="health-test:")
    with TestClient(create_app(ok)) as c:
        r = c.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["checks"]["redis"] == {"ok": True}
        # Pointed at a port where no Redis listens, the check fails and says which.
        c.app.app.state.runtime.settings = ok.model_copy(
            update={"redis_url": f"redis://127.0.0.1:{_free_port()}/0"}
        )
        r = c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["notReady"] == ["redis"]
    assert r.json()["checks"]["redis"]["ok"] is False
