"""The reports' rollups in the running server: a pass every ``rollup_interval_s`` in the
background, and one before a report is read, so a report counts what was just stored.

A pass recounts only the quarter hours touched since the last one (``store/rollups.py``);
passes of one process never overlap (a lock), and a report waits a few seconds at most
behind a pass in progress (the first one on a database with history rebuilds it all):
then it answers from the rollups as they are.

>>> import tempfile, pathlib
>>> from opportune.store.db import make_engine, migrate
>>> db = make_engine(f"sqlite:///{pathlib.Path(tempfile.mkdtemp()) / 'r.db'}")
>>> migrate(db)
>>> r = Rollups(db, margin_s=30, max_age_s=3600)
>>> r.catch_up(now_ms=1_800_000_000_000).rebuilt, r.catch_up(now_ms=1_800_000_005_000).quarters
(True, 0)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from sqlalchemy import Engine

from opportune.store import rollups
from opportune.store.rollups import Pass

log = logging.getLogger(__name__)


class Rollups:
    """One process's rollup passes over ``engine``."""

    def __init__(
        self, engine: Engine, *, margin_s: float, max_age_s: float, interval_s: float = 5.0
    ) -> None:
        self.engine = engine
        self.margin_ms = int(margin_s * 1000)
        self.max_age_ms = int(max_age_s * 1000)
        self.interval_s = interval_s
        self._lock = threading.Lock()

    def catch_up(self, *, now_ms: int | None = None, wait_s: float | None = None) -> Pass | None:
        """One pass (blocking: call in a thread). With ``wait_s`` (a report about to read)
        it waits at most that long for a pass in progress, ``None`` if it is still running
        then, and never rebuilds: the first pass on a database with history is the
        background loop's."""
        if not self._lock.acquire(timeout=-1 if wait_s is None else wait_s):
            return None
        try:
            return rollups.catch_up(
                self.engine,
                now_ms=int(time.time() * 1000) if now_ms is None else now_ms,
                margin_ms=self.margin_ms,
                max_age_ms=self.max_age_ms,
                may_rebuild=wait_s is None,
            )
        finally:
            self._lock.release()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a pass every ``interval_s`` (a pass in progress finishes)."""
        while not stop.is_set():
            try:
                done = await asyncio.to_thread(self.catch_up)
                if done is not None and done.rebuilt:
                    log.info("report rollups rebuilt: %d quarter hours", done.quarters)
            except Exception:  # the database is away: try again on the next pass
                log.exception("could not bring the report rollups up to date")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
