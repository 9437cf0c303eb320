"""Group commit: many concurrent batches share one transaction; each is answered after it.

One writer thread owns the write connection. Request handlers hand it a ``WriteJob`` and
await its future. The thread takes every job waiting in the queue (up to a bound), writes
them all in one transaction and resolves each job's future only after the commit, so a 2xx
always means "durable" while the cost of a commit (an fsync on SQLite, a round trip on
PostgreSQL) is shared by everything that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from opportune.store.schema import events, sessions, visitors

log = logging.getLogger(__name__)

# Called inside the transaction for each identify event, in order; returns what the
# caller should learn (the customer now in force, refusals).
IdentifyFn = Callable[[Connection, "IdentifyOp"], Any]


@dataclass(slots=True)
class IdentifyOp:
    site_id: str
    visitor_id: str
    event_index: int
    identity: Any
    traits: dict[str, Any]
    now_ms: int
    default_region: str


@dataclass(slots=True)
class WriteJob:
    """What one accepted batch writes. Rows are plain dicts in the tables' column names."""

    visitor: dict[str, Any] | None
    sessions: list[dict[str, Any]]
    events: list[dict[str, Any]]
    identifies: list[IdentifyOp] = field(default_factory=list)
    future: asyncio.Future[list[Any]] | None = None
    loop: asyncio.AbstractEventLoop | None = None


class WriterClosed(RuntimeError):
    pass


class GroupCommitWriter:
    """The single writer thread. ``submit`` from the event loop; ``close`` drains and stops."""

    def __init__(
        self, engine: Engine, *, identify: IdentifyFn | None = None, max_events: int = 2000
    ) -> None:
        self.engine = engine
        self.identify = identify
        self.max_events = max_events
        self._queue: queue.SimpleQueue[WriteJob | None] = queue.SimpleQueue()
        self._closed = False
        self.commits = 0
        self.jobs_written = 0
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._thread = threading.Thread(target=self._run, name="opportune-writer", daemon=True)
        self._thread.start()

    async def submit(self, job: WriteJob) -> list[Any]:
        """Queue ``job`` and wait until it is committed; returns identify outcomes."""
        if self._closed:
            raise WriterClosed("writer is closed")
        loop = asyncio.get_running_loop()
        job.loop = loop
        if job.future is None:
            job.future = loop.create_future()
        self._queue.put(job)
        return await job.future

    def write_now(self, job: WriteJob) -> list[Any]:
        """Write one job synchronously on the caller's thread (backfills, tests, tools)."""
        with self.engine.begin() as conn:
            return self._write(conn, [job])[0]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            count = len(first.events)
            while count < self.max_events:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                group.append(nxt)
                count += len(nxt.events)
            self._commit_group(group)

    def _commit_group(self, group: list[WriteJob]) -> None:
        try:
            with self.engine.begin() as conn:
                results = self._write(conn, group)
        except Exception as exc:
            if len(group) == 1:
                log.exception("write failed")
                _resolve(group[0], exc=exc)
                return
            # One bad job must not fail the others: write them one by one.
            for job in group:
                self._commit_group([job])
            return
        self.commits += 1
        self.jobs_written += len(group)
        for job, result in zip(group, results, strict=True):
            _resolve(job, result=result)

    def _write(self, conn: Connection, group: Sequence[WriteJob]) -> list[list[Any]]:
        visitor_rows = _merge_visitors([j.visitor for j in group if j.visitor is not None])
        session_rows = _merge_sessions([s for j in group for s in j.sessions])
        event_rows = [e for j in group for e in j.events]
        if visitor_rows:
            self._upsert_visitors(conn, visitor_rows)
        if session_rows:
            self._upsert_sessions(conn, session_rows)
        if event_rows:
            ins = self._insert(events).on_conflict_do_nothing()
            conn.execute(ins, event_rows)
        results: list[list[Any]] = []
        for job in group:
            out = []
            for op in job.identifies:
                if self.identify is None:
                    raise RuntimeError("identify events need an identify function")
                out.append(self.identify(conn, op))
            results.append(out)
        if any(j.identifies for j in group) or any(r.get("_new") for r in session_rows):
            # A new visit takes the visitor's customer as it stands after this transaction's
            # identifies, whichever request's in-memory view was older.
            new_ids = [r["id"] for r in session_rows if r.get("_new")]
            if new_ids:
                cust = (
                    select(visitors.c.customer_id)
                    .where(visitors.c.id == sessions.c.visitor_id)
                    .scalar_subquery()
                )
                conn.execute(
                    update(sessions)
                    .where(sessions.c.id.in_(new_ids), sessions.c.customer_id.is_(None))
                    .values(customer_id=cust)
                )
        return results

    def _upsert_visitors(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        ins = self._insert(visitors)
        ex = ins.excluded
        stmt = ins.on_conflict_do_update(
            index_elements=[visitors.c.id],
            set_={
                "last_seen_at": case(
                    (ex.last_seen_at > visitors.c.last_seen_at, ex.last_seen_at),
                    else_=visitors.c.last_seen_at,
                ),
                "session_count": case(
                    (ex.session_count > visitors.c.session_count, ex.session_count),
                    else_=visitors.c.session_count,
                ),
            },
        )
        conn.execute(stmt, rows)

    def _upsert_sessions(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        ins = self._insert(sessions)
        ex = ins.excluded
        keep_first = {
            c: _coalesce(getattr(sessions.c, c), getattr(ex, c))
            for c in (
                "landing_url",
                "referrer",
                "referrer_domain",
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "utm_term",
                "utm_content",
            )
        }
        stmt = ins.on_conflict_do_update(
            index_elements=[sessions.c.id],
            set_={
                "last_event_at": case(
                    (ex.last_event_at > sessions.c.last_event_at, ex.last_event_at),
                    else_=sessions.c.last_event_at,
                ),
                "started_at": case(
                    (ex.started_at < sessions.c.started_at, ex.started_at),
                    else_=sessions.c.started_at,
                ),
                "event_count": sessions.c.event_count + ex.event_count,
                "page_count": sessions.c.page_count + ex.page_count,
                **keep_first,
            },
        )
        conn.execute(stmt, [{k: v for k, v in r.items() if k != "_new"} for r in rows])


def _coalesce(a: Any, b: Any) -> Any:
    return case((a.is_(None), b), else_=a)


def _merge_visitors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per visitor (a multi-row upsert must not touch a row twice)."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        prev = merged.get(row["id"])
        if prev is None:
            merged[row["id"]] = dict(row)
        else:
            prev["first_seen_at"] = min(prev["first_seen_at"], row["first_seen_at"])
            prev["last_seen_at"] = max(prev["last_seen_at"], row["last_seen_at"])
            prev["session_count"] = max(prev["session_count"], row["session_count"])
    return list(merged.values())


def _merge_sessions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per session; counts add up, the first non-empty landing facts win."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        prev = merged.get(row["id"])
        if prev is None:
            merged[row["id"]] = dict(row)
            continue
        prev["event_count"] += row["event_count"]
        prev["page_count"] += row["page_count"]
        prev["last_event_at"] = max(prev["last_event_at"], row["last_event_at"])
        prev["started_at"] = min(prev["started_at"], row["started_at"])
        prev["_new"] = prev.get("_new") or row.get("_new")
        for key, value in row.items():
            if prev.get(key) is None and value is not None:
                prev[key] = value
    return list(merged.values())


def _resolve(job: WriteJob, *, result: Any = None, exc: BaseException | None = None) -> None:
    fut, loop = job.future, job.loop
    if fut is None or loop is None:
        if exc is not None:
            raise exc
        return

    def done() -> None:
        if fut.done():  # the request went away (client disconnected)
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    try:
        loop.call_soon_threadsafe(done)
    except RuntimeError:  # loop closed during shutdown
        pass
