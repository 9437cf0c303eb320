"""Fault: ``kill -9`` of the one server process on SQLite under load, then the process
started again on the same file; the visitors resend every batch not acknowledged.
Every acknowledged event is stored exactly once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path


def test_kill_9_under_load_on_sqlite_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, serve, visitors, stored_once
) -> None:
    server = serve("sqlite")
    load = visitors([server.url], visitors=16, batches=10)
    back: list[float] = []

    async def fault() -> None:
        back.append(await load.when_acked(40))  # commits in flight, answers in flight
        server.kill()
        await asyncio.to_thread(lambda: server.start().ready())
        back.append(time.monotonic())

    async def main() -> None:
        await asyncio.gather(load.run(), fault())

    asyncio.run(main())
    server.stop()
    db = f"sqlite:///{tmp_path / 'data' / 'opportune.db'}"
    stored_once(db, load, fault="kill -9, SQLite, one process", since=back[1], fault_at=back[0])
