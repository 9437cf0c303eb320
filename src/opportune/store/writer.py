"""Group commit: many concurrent batches share one transaction; each is answered after it.

Request handlers hand the writer a ``WriteJob`` and await its future. The writer takes every
job waiting (up to a bound), writes them all in one transaction and resolves each job's
future only after the commit, so a 2xx always means "durable" while the cost of a commit
(an fsync on SQLite, a round trip on PostgreSQL) is shared by everything that arrived
meanwhile.

Everything runs on the event loop — no writer thread: on one core a second thread holding
the GIL for driver calls cost about a third of the throughput (measured).

- SQLite: the inserts are in-process CPU work done on the loop; only the commit — an fsync,
  during which the GIL is free — goes to a thread.
- PostgreSQL: the asyncio driver (psycopg's, through SQLAlchemy's async engine), so waiting
  for the server costs the loop nothing; events go in with COPY.

Exactly-once is the database's: each event's key (site, visitor, event id) is claimed in
``event_ids`` in the same transaction; a group with a key already there is rolled back and
its jobs written one by one, and a job that fails alone is told why (``store/verdicts``):
events already stored, or events the database refuses — its batch is then judged again.

Per-visitor ordering is the database's too: a job names the version of the visitor its
live state was read at, and the group's first statement bumps each visitor's
``visitors.version`` only from that version (compare-and-set, in visitor id order). A job
whose visitor moved on — another process committed for it, let in by an expired lock, or
this process's state of it is stale — is left out of the group and told ``Superseded``;
a writer still committing for the visitor holds the row, so the next one waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from opportune.settings import DEFAULT_COMMIT_MAX_BATCH
from opportune.store.identify import IdentifyOutcome, apply_identify
from opportune.store.schema import sessions
from opportune.store.verdicts import (
    AlreadyStored,
    Conflict,
    Superseded,
    Unstorable,
    claim_keys,
    is_data_error,
    stored_ids,
    unstorable_rows,
)

log = logging.getLogger(__name__)

# Called inside the transaction for each identify event, in order; returns what the
# caller should learn (the customer now in force, refusals).
IdentifyFn = Callable[[Connection, "IdentifyOp"], Any]


def apply_identify_op(conn: Connection, op: IdentifyOp) -> IdentifyOutcome:
    """The writer's identify: link the visitor to its customer inside the transaction."""
    return apply_identify(
        conn,
        site_id=op.site_id,
        visitor_id=op.visitor_id,
        identity=op.identity,
        traits=op.traits,
        now_ms=op.now_ms,
        default_region=op.default_region,
    )


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
    """What one accepted batch writes: visitor and session rows as dicts in the tables'
    column names; events and facts as row records (tuples in column order: the bulk)."""

    visitor: dict[str, Any] | None
    sessions: list[dict[str, Any]]
    events: list[EventRow]
    identifies: list[IdentifyOp] = field(default_factory=list)
    # Facts of the rules.
    segment_changes: list[SegmentChangeRow] = field(default_factory=list)
    achievements: list[AchievementRow] = field(default_factory=list)
    # Action instances' states (tuples in ActionEventRow order) and webhook calls to make
    # (WEBHOOK_COLUMNS order).
    action_events: list[tuple[Any, ...]] = field(default_factory=list)
    webhooks: list[tuple[Any, ...]] = field(default_factory=list)
    # The visitor's version its live state was read at. With a ``visitor`` row, the job
    # commits only if the stored version still equals it, and bumps it (``Superseded``
    # otherwise); None: the visitor row, if any, is upserted unconditionally.
    version: int | None = None
    future: asyncio.Future[list[Any]] | None = None
    loop: asyncio.AbstractEventLoop | None = None


class WriterClosed(RuntimeError):
    pass


class GroupCommitWriter:
    """The single writer of the hot path. ``submit`` from the event loop."""

    def __init__(
        self,
        engine: Engine,
        *,
        identify: IdentifyFn = apply_identify_op,
        max_events: int = DEFAULT_COMMIT_MAX_BATCH,
    ) -> None:
        self.engine = engine
        self.identify = identify
        self.max_events = max_events
        self._closed = False
        self.commits = 0
        self.jobs_written = 0
        self.superseded = 0  # jobs refused because their visitor moved on
        self._sql = _Sql(engine.dialect.name)
        # SQLite's commits get a thread of their own: the write lock is held from the loop
        # until the commit returns, so a commit waiting for a thread of the shared pool,
        # whose threads may all be waiting for that lock, would stall every writer.
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="opportune-commit")
        self._pending: list[WriteJob] = []
        self._flushing = False
        self._flush_task: asyncio.Task[None] | None = None
        self._aengine: AsyncEngine | None = None
        if self._sql.pg:
            self._aengine = create_async_engine(engine.url, pool_size=2, max_overflow=2)

    def backlog(self) -> int:  # jobs waiting for a commit (engine/metrics.py samples it)
        return len(self._pending)

    async def submit(self, job: WriteJob) -> list[Any]:
        """Queue ``job`` and wait until it is committed; returns identify outcomes."""
        if self._closed:
            raise WriterClosed("writer is closed")
        loop = asyncio.get_running_loop()
        job.loop = loop
        if job.future is None:
            job.future = loop.create_future()
        self._pending.append(job)
        if not self._flushing:
            self._flushing = True
            self._flush_task = loop.create_task(self._flush())
        return await job.future

    async def _flush(self) -> None:
        try:
            while self._pending:
                # One turn of the loop lets requests already read join this group.
                await asyncio.sleep(0)
                group, count = [], 0
                while self._pending and count < self.max_events:
                    job = self._pending.pop(0)
                    group.append(job)
                    count += len(job.events)
                await self._commit(group)
        finally:
            self._flushing = False

    async def _commit(self, group: list[WriteJob]) -> None:
        try:
            if self._aengine is not None:
                results = await self._commit_pg(self._aengine, group)
            else:
                results = await self._commit_sqlite(group)
        except Exception as exc:
            if len(group) == 1:
                _resolve(group[0], exc=await self._explain(group[0], exc))
                return
            for job in group:  # one bad job must not fail the others
                await self._commit([job])
            return
        self.commits += 1
        for job, result in zip(group, results, strict=True):
            if isinstance(result, Superseded):
                self.superseded += 1
                _resolve(job, exc=result)
            else:
                self.jobs_written += 1
                _resolve(job, result=result)

    async def _explain(self, job: WriteJob, exc: Exception) -> Exception:
        """What a job that failed alone tells its batch: events already stored (judge it
        again), events the database refuses (refuse them, store the rest), or the error
        itself (an outage: nothing stored, the client retries)."""
        try:
            if isinstance(exc, Conflict):
                return AlreadyStored(await self._run(stored_ids, job.events))
            if job.events and is_data_error(exc):
                bad = await self._run(unstorable_rows, job.events)
                if bad:
                    log.warning("events refused by the database: %s", bad)
                    return Unstorable(bad)
        except Exception:
            log.exception("could not tell why a write failed")
        log.error("write failed", exc_info=exc)
        return exc

    async def _run(self, fn: Callable[..., Any], rows: list[EventRow]) -> Any:
        # The sync engine, off the loop on PostgreSQL (a rare path: no need for async SQL).
        if self._sql.pg:
            return await asyncio.to_thread(fn, self.engine, self._sql.events, rows)
        return fn(self.engine, self._sql.events, rows)

    async def _commit_sqlite(self, group: list[WriteJob]) -> list[Any]:
        with self.engine.connect() as conn:
            trans = conn.begin()
            try:
                cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    fence = _Fence(group)
                    for sql, params in fence.statements(self._sql):
                        cur.execute(sql, params)
                        fence.passed.update(r[0] for r in cur.fetchall())
                    live = fence.live()
                    for sql, rows in _statements(self._sql, live):
                        if sql is _COPY_EVENTS:
                            claim_keys(cur, self._sql.event_ids, rows)
                            sql = self._sql.events
                        cur.executemany(sql, rows)
                finally:
                    cur.close()
                results = self._identifies(conn, live)
                # The commit is an fsync: off the loop, with the GIL free meanwhile.
                await asyncio.get_running_loop().run_in_executor(self._committer, trans.commit)
                return fence.results(results)
            except BaseException:
                trans.rollback()
                raise

    async def _commit_pg(self, aengine: AsyncEngine, group: list[WriteJob]) -> list[Any]:
        async with aengine.connect() as aconn, aconn.begin():
            raw = await aconn.get_raw_connection()
            pg = raw.driver_connection
            assert pg is not None
            fence = _Fence(group)
            async with pg.cursor() as cur:
                for sql, params in fence.statements(self._sql):
                    await cur.execute(sql, params)
                    fence.passed.update(r[0] for r in await cur.fetchall())
                live = fence.live()
                for sql, rows in _statements(self._sql, live):
                    if sql is _COPY_EVENTS:
                        await self._sql.copy_events(cur, rows)
                    else:
                        await cur.executemany(sql, rows)
            if any(j.identifies for j in live):
                # Identity rules are synchronous SQLAlchemy code: run them on this
                # connection, inside this transaction.
                return fence.results(await aconn.run_sync(self._identifies, live))
            return fence.results([[] for _ in live])

    def _identifies(self, conn: Connection, group: Sequence[WriteJob]) -> list[list[Any]]:
        results: list[list[Any]] = []
        for job in group:
            out = []
            for op in job.identifies:
                out.append(self.identify(conn, op))
            results.append(out)
        return results

    async def aclose(self) -> None:
        """Refuse new jobs, wait for those queued, release the connections."""
        self._closed = True
        if self._flush_task is not None and not self._flush_task.done():
            await self._flush_task
        if self._aengine is not None:
            await self._aengine.dispose()
        self._committer.shutdown(wait=True)


_COPY_EVENTS = "COPY events"


def _statements(sql: _Sql, group: Sequence[WriteJob]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """What a group writes, in order: visitors, sessions, events, then new visits' customer.

    One row per visitor and per session (a multi-row upsert must not touch a row twice);
    rows go to the driver as tuples — SQLAlchemy's per-row parameter processing cost more
    than SQLite's own insert work.
    """
    visitor_rows = _merge_visitors(
        [j.visitor for j in group if j.visitor is not None and j.version is None]
    )
    session_rows = _merge_sessions([s for j in group for s in j.sessions])
    event_rows = [e for j in group for e in j.events]
    out: list[tuple[str, list[tuple[Any, ...]]]] = []
    if visitor_rows:
        out.append((sql.visitors, [tuple(r[c] for c in VISITOR_COLUMNS) for r in visitor_rows]))
    if session_rows:
        out.append((sql.sessions, [tuple(r[c] for c in SESSION_COLUMNS) for r in session_rows]))
    if event_rows:
        # A marker, not SQL: each dialect claims the events' keys in event_ids first, then
        # stores the rows (SQLite: claim_keys, executemany; PostgreSQL: _Sql.copy_events).
        out.append((_COPY_EVENTS, event_rows))
    changes = [c for j in group for c in j.segment_changes]
    if changes:
        out.append((sql.segment_changes, changes))
    achieved = [a for j in group for a in j.achievements]
    if achieved:
        out.append((sql.achievements, achieved))
    acts = [a for j in group for a in j.action_events]
    if acts:
        out.append((sql.action_events, acts))
    hooks = [h for j in group for h in j.webhooks]
    if hooks:
        out.append((sql.webhooks, hooks))
    new_ids = [(r["id"],) for r in session_rows if r.get("_new")]
    if new_ids:
        # A new visit takes the visitor's customer as it stands in the database now,
        # whichever request's in-memory view of the visitor was older.
        out.append((sql.session_customer, new_ids))
    return out


# Rows per fenced upsert: SQLite allows 32,766 parameters per statement, PostgreSQL 65,535.
_FENCE_CHUNK = 500


class _Fence:
    """The compare-and-set of a group's visitors' versions, before anything else is written.

    One row per visitor, in id order: two processes' transactions lock the visitors they
    share in one order (a wait, not a deadlock). A second job of one visitor in a group
    (not made by one process's ingestion, which takes one visitor's batches in turn) is
    superseded at once: its state cannot include the first one's.
    """

    def __init__(self, group: Sequence[WriteJob]) -> None:
        self.group = group
        self.passed: set[str] = set()
        self._late: set[int] = set()
        rows: dict[str, tuple[Any, ...]] = {}
        for i, job in enumerate(group):
            if job.version is None or job.visitor is None:
                continue
            vid = job.visitor["id"]
            if vid in rows:
                self._late.add(i)
            else:
                rows[vid] = (*(job.visitor[c] for c in VISITOR_COLUMNS), job.version + 1)
        self._rows = [rows[k] for k in sorted(rows)]

    def statements(self, sql: _Sql) -> list[tuple[str, Any]]:
        """The upserts to run, each returning the ids of the visitors it bumped."""
        if not self._rows:
            return []
        if sql.pg:
            # One statement text whatever the group's size (prepared once), columns as arrays.
            return [(sql.fenced_visitors_pg, [list(col) for col in zip(*self._rows, strict=True)])]
        out = []
        for at in range(0, len(self._rows), _FENCE_CHUNK):
            chunk = self._rows[at : at + _FENCE_CHUNK]
            out.append((sql.fenced_visitors(len(chunk)), [v for row in chunk for v in row]))
        return out

    def _superseded(self, i: int, job: WriteJob) -> bool:
        if job.version is None or job.visitor is None:
            return False
        return i in self._late or job.visitor["id"] not in self.passed

    def live(self) -> list[WriteJob]:
        """The jobs whose visitor's version was theirs: the ones to write."""
        return [j for i, j in enumerate(self.group) if not self._superseded(i, j)]

    def results(self, written: list[list[Any]]) -> list[Any]:
        """Per job of the group: the written ones' results, ``Superseded`` for the rest."""
        out: list[Any] = []
        it = iter(written)
        for i, job in enumerate(self.group):
            if self._superseded(i, job):
                assert job.visitor is not None
                out.append(Superseded(job.visitor["id"]))
            else:
                out.append(next(it))
        return out


class EventRow(NamedTuple):
    """One stored event in the events table's column order (as COPY and INSERT take it)."""

    visitor_id: str
    ts: int
    event_id: str
    site_id: str
    session_id: str
    received_at: int
    seq: int
    type: str
    url: str | None
    name: str | None
    query: str | None
    title: str | None
    referrer: str | None
    data: str | None  # JSON


class SegmentChangeRow(NamedTuple):
    """A segment entered or left (session scope) or assigned until ``expires_at``."""

    site_id: str
    segment: str
    change: str  # entered | left | assigned
    at: int
    expires_at: int | None
    session_id: str
    visitor_id: str
    customer_id: str | None


class AchievementRow(NamedTuple):
    """An outcome achieved in a visit (at most one per visit and outcome)."""

    session_id: str
    outcome: str
    site_id: str
    visitor_id: str
    customer_id: str | None
    achieved_at: int
    value: float | None
    event_id: str


class ActionEventRow(NamedTuple):
    """A state of an action-map instance (offered, accepted, ...)."""

    site_id: str
    map: str
    instance_id: str
    state: str
    reason: str | None
    at: int
    session_id: str
    visitor_id: str
    customer_id: str | None
    detail: str | None  # JSON


EVENT_COLUMNS = EventRow._fields
SEGMENT_CHANGE_COLUMNS = SegmentChangeRow._fields
ACHIEVEMENT_COLUMNS = AchievementRow._fields
ACTION_EVENT_COLUMNS = ActionEventRow._fields


VISITOR_COLUMNS = (
    "id",
    "site_id",
    "customer_id",
    "first_seen_at",
    "last_visit_at",
    "session_count",
)
SESSION_COLUMNS = tuple(c.name for c in sessions.columns)
WEBHOOK_COLUMNS = (
    "id",
    "site_id",
    "map",
    "session_id",
    "visitor_id",
    "method",
    "url",
    "headers",
    "body",
    "timeout_ms",
    "max_attempts",
    "attempts",
    "status",
    "next_at",
    "claimed_until",
    "last_error",
    "created_at",
    "done_at",
)
_FIRST_WINS = (
    "landing_url",
    "referrer",
    "referrer_domain",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
)


class _Sql:
    """The writer's statements in one dialect's SQL and parameter style."""

    def __init__(self, dialect: str) -> None:
        pg = dialect == "postgresql"
        ph = "%s" if pg else "?"
        greatest, least = ("GREATEST", "LEAST") if pg else ("max", "min")

        def values(cols: tuple[str, ...]) -> str:
            return (
                "("
                + ", ".join(f'"{c}"' for c in cols)
                + ") VALUES ("
                + ", ".join([ph] * len(cols))
                + ")"
            )

        self.pg = pg
        self.events = f"INSERT INTO events {values(EVENT_COLUMNS)} ON CONFLICT DO NOTHING"
        self.event_ids = (
            f"INSERT INTO event_ids {values(('site_id', 'visitor_id', 'event_id', 'ts'))} "
            "ON CONFLICT DO NOTHING"
        )
        self.segment_changes = f"INSERT INTO segment_changes {values(SEGMENT_CHANGE_COLUMNS)}"
        self.action_events = f"INSERT INTO action_events {values(ACTION_EVENT_COLUMNS)}"
        # One call per action instance: a retried batch must not call twice.
        self.webhooks = (
            f"INSERT INTO webhook_deliveries {values(WEBHOOK_COLUMNS)} ON CONFLICT DO NOTHING"
        )
        # A visit achieves an outcome once: a retried batch must not count it twice.
        self.achievements = (
            f"INSERT INTO outcome_achievements {values(ACHIEVEMENT_COLUMNS)} ON CONFLICT DO NOTHING"
        )
        visitor_update = (
            f"last_visit_at = {greatest}(visitors.last_visit_at, excluded.last_visit_at), "
            f"session_count = {greatest}(visitors.session_count, excluded.session_count)"
        )
        self.visitors = (
            f"INSERT INTO visitors {values(VISITOR_COLUMNS)} ON CONFLICT (id) DO UPDATE SET "
            + visitor_update
        )
        fenced_cols = (*VISITOR_COLUMNS, "version")
        self._fenced_head = (
            "INSERT INTO visitors (" + ", ".join(f'"{c}"' for c in fenced_cols) + ") VALUES "
        )
        self._fenced_row = "(" + ", ".join([ph] * len(fenced_cols)) + ")"
        # Bumped only from the version the job's state was read at; a visitor another
        # transaction is writing is waited for (its row is locked), then judged.
        self._fenced_tail = (
            " ON CONFLICT (id) DO UPDATE SET "
            + visitor_update
            + ", version = excluded.version WHERE visitors.version = excluded.version - 1"
            " RETURNING id"
        )
        self.fenced_visitors_pg = (
            self._fenced_head.removesuffix(" VALUES ")
            + " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], "
            "%s::bigint[], %s::int[], %s::bigint[]) ORDER BY 1" + self._fenced_tail
        )
        first = ", ".join(f"{c} = COALESCE(sessions.{c}, excluded.{c})" for c in _FIRST_WINS)
        self.sessions = (
            f"INSERT INTO sessions {values(SESSION_COLUMNS)} ON CONFLICT (id) DO UPDATE SET "
            f"last_event_at = {greatest}(sessions.last_event_at, excluded.last_event_at), "
            f"started_at = {least}(sessions.started_at, excluded.started_at), "
            "event_count = sessions.event_count + excluded.event_count, "
            "page_count = sessions.page_count + excluded.page_count, " + first
        )
        self.session_customer = (
            "UPDATE sessions SET customer_id = (SELECT v.customer_id FROM visitors v "
            f"WHERE v.id = sessions.visitor_id) WHERE id = {ph} AND customer_id IS NULL"
        )
        cols = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
        self._copy = f"COPY events_in ({cols}) FROM STDIN"
        self._from_stage = (
            f"INSERT INTO events ({cols}) SELECT {cols} FROM events_in ON CONFLICT DO NOTHING"
        )
        # In key order, so two processes' transactions claim overlapping keys in one order
        # (a wait, not a deadlock).
        self._claim_staged = (
            "INSERT INTO event_ids (site_id, visitor_id, event_id, ts) "
            "SELECT site_id, visitor_id, event_id, ts FROM events_in "
            "ORDER BY site_id, visitor_id, event_id ON CONFLICT DO NOTHING"
        )

    def fenced_visitors(self, n: int) -> str:
        """The compare-and-set upsert of ``n`` visitor rows (columns, then the new version)."""
        return self._fenced_head + ", ".join([self._fenced_row] * n) + self._fenced_tail

    async def copy_events(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        """PostgreSQL: COPY into a per-connection staging table, then one INSERT that skips
        duplicates (COPY itself cannot ON CONFLICT)."""
        await cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS events_in "
            "(LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        async with cur.copy(self._copy) as copy:
            for r in rows:
                await copy.write_row(r)
        # A key held by a transaction under way waits for it: skipped only once committed.
        await cur.execute(self._claim_staged)
        if cur.rowcount != len(rows):
            raise Conflict
        await cur.execute(self._from_stage)


def _merge_visitors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per visitor (a multi-row upsert must not touch a row twice)."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        prev = merged.get(row["id"])
        if prev is None:
            merged[row["id"]] = dict(row)
        else:
            prev["first_seen_at"] = min(prev["first_seen_at"], row["first_seen_at"])
            prev["last_visit_at"] = max(prev["last_visit_at"], row["last_visit_at"])
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
    if not fut.done() and _on_loop(loop):
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
        return

    def done() -> None:
        if fut.done():  # the request went away (client disconnected)
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
        loop.call_soon_threadsafe(done)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
