"""What the per-visitor version check costs the group-commit writer, per batch.

The writer in this process, on SQLite (a file) and PostgreSQL: batches of 10 events of a
visit already under way (the common case: before the check such a batch wrote no visitor
row), committed alone (one batch per commit: latency) and in groups of 50 (throughput),
with the check (the visitor row's compare-and-set upsert first in the transaction) and
without it (no visitor row), in alternating rounds so that the machine's noise falls on
both alike. Prints the median time per commit and per batch of each.

    python bench/fence.py [--rounds 6] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

from opportune.store.db import make_engine, migrate
from opportune.store.visits import session_row
from opportune.store.writer import EventRow, GroupCommitWriter, WriteJob

PG_ADMIN = os.environ.get(
    "OPPORTUNE_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
PER = 10


class Visitors:
    """Visitors with a visit under way; each job continues its visitor's visit."""

    def __init__(self, n: int) -> None:
        self.ids = [f"b{uuid.uuid4().hex[:10]}" for _ in range(n)]
        self.version = dict.fromkeys(self.ids, 0)
        self.seq = 0

    def job(self, vid: str, *, fenced: bool, first: bool = False) -> WriteJob:
        now = int(time.time() * 1000)
        sid = f"{vid}-1"
        row = session_row(session_id=sid, site_id="s", visitor_id=vid, customer_id=None, ts=now)
        row.update(number=1, event_count=PER, page_count=1)
        evs = []
        for k in range(PER):
            self.seq += 1
            no_text = (None,) * 6  # url, name, query, title, referrer, data
            evs.append(EventRow(vid, now + k, f"e{self.seq}", "s", sid, now, k, "click", *no_text))
        visitor = {
            "id": vid,
            "site_id": "s",
            "customer_id": None,
            "first_seen_at": now,
            "last_visit_at": now,
            "session_count": 1,
        }
        return WriteJob(
            visitor=visitor if (fenced or first) else None,
            sessions=[row],
            events=evs,
            version=self.version[vid] if fenced else None,
        )


async def _round(
    writer: GroupCommitWriter, vs: Visitors, *, group: int, fenced: bool
) -> tuple[float, float]:
    """Seconds per batch over one pass of every visitor, ``group`` batches per commit: wall
    time, and this process's CPU time (what the loop spends: steadier on a busy machine;
    PostgreSQL's own work is in its server process)."""
    start, cpu = time.perf_counter(), time.process_time()
    for at in range(0, len(vs.ids), group):
        chunk = vs.ids[at : at + group]
        await asyncio.gather(*[writer.submit(vs.job(v, fenced=fenced)) for v in chunk])
        if fenced:
            for v in chunk:
                vs.version[v] += 1
    n = len(vs.ids)
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n


async def measure(url: str, rounds: int) -> dict[tuple[int, bool], tuple[float, float]]:
    engine = make_engine(url)
    migrate(engine)
    writer = GroupCommitWriter(engine)
    vs = Visitors(300)
    try:
        # Every visitor and its visit exist first, as for a visit under way.
        await asyncio.gather(*[writer.submit(vs.job(v, fenced=False, first=True)) for v in vs.ids])
        out: dict[tuple[int, bool], list[tuple[float, float]]] = {}
        for _ in range(rounds):
            for group in (1, 50):
                for fenced in (False, True):
                    out.setdefault((group, fenced), []).append(
                        await _round(writer, vs, group=group, fenced=fenced)
                    )
        assert writer.superseded == 0
        return {
            k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
            for k, v in out.items()
        }
    finally:
        await writer.aclose()
        engine.dispose()


def report(name: str, m: dict[tuple[int, bool], tuple[float, float]]) -> None:
    for group in (1, 50):
        for i, kind in enumerate(("wall", "cpu")):
            off, on = m[(group, False)][i] * 1e6, m[(group, True)][i] * 1e6
            print(
                f"{name:<10} {group:>3} batches/commit {kind:<4}  without {off:7.0f} µs/batch"
                f"  with {on:7.0f} µs/batch  cost {on - off:+6.0f} µs "
                f"({(on / off - 1) * 100:+.1f} %)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--skip-postgres", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report("SQLite", asyncio.run(measure(f"sqlite:///{Path(tmp) / 'f.db'}", args.rounds)))
    if args.skip_postgres:
        return
    from sqlalchemy import create_engine

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"opportune_fence_{uuid.uuid4().hex[:6]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        report(
            "PostgreSQL", asyncio.run(measure(PG_ADMIN.rsplit("/", 1)[0] + "/" + name, args.rounds))
        )
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
