"""Engine creation and migrations, the same for SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect, text

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, *, background_checkpoint: bool = False) -> Engine:
    """An engine tuned per dialect: SQLite in WAL mode with a busy timeout.

    With ``background_checkpoint`` SQLite's automatic WAL checkpoint is turned off on these
    connections: a ``Checkpointer`` thread must then run it. The automatic one runs inside
    whichever commit crosses the threshold, which then waits for the copy and an fsync of
    the database file — a latency spike for every request in that group commit.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable in WAL mode against a process crash; FULL adds power-loss
            # safety at the cost of an fsync per commit (group commit makes that affordable).
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            if background_checkpoint:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        return engine
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the database schema to ``revision`` (idempotent)."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class Checkpointer:
    """Copies SQLite's WAL into the database file from a thread of its own, every
    ``interval_s`` (small, so each copy is short), so that commits on the hot path never
    do it themselves."""

    def __init__(self, engine: Engine, interval_s: float = 0.25) -> None:
        import threading

        self.engine = engine
        self.interval_s = interval_s
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="opportune-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import logging
        import os
        import threading

        # Copying pages is CPU and I/O this thread may do slowly: on a busy core the
        # scheduler should favour the event loop, whose requests are waiting.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not self._stop.wait(self.interval_s):
            try:
                self.checkpoint("PASSIVE")
            except Exception:  # keep going: a failed checkpoint is retried next interval
                logging.getLogger(__name__).exception("WAL checkpoint failed")

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(f"PRAGMA wal_checkpoint({mode})")
            cur.close()
        finally:
            raw.close()
        self.runs += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        # Leave a small WAL behind: fold everything in while nothing else writes.
        self.checkpoint("TRUNCATE")


def schema_revisions(engine: Engine) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The database's Alembic revision(s) and the migrations' head(s): equal when the
    schema is current. Raises what the database raises when it cannot be reached."""
    # Read directly, not through Alembic's MigrationContext, which logs two lines at every
    # look (a readiness probe looks every few seconds).
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return (), _heads()
        current = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
        return tuple(sorted(current)), _heads()


@functools.cache
def _heads() -> tuple[str, ...]:
    """The migrations' head revision(s), read from the scripts once per process."""
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return tuple(sorted(ScriptDirectory.from_config(cfg).get_heads()))
