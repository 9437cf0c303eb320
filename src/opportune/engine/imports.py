"""Imports of history: a customer's past events, line by line, through the ingestion
pipeline's historical mode (``Ingestor.ingest_history``) — the same placement in visits,
identity, rules, segments, outcomes and rows as live traffic, none of the moment's work.

Lines are taken a window at a time (``window`` lines): the window's events are grouped by
visitor and put in time order (ties keep the file's order), each visitor's events go in as
one batch, the visitors' batches concurrently so that the group-commit writer shares its
commits among them. When a window is done its events are committed: the caller may then
record how far it got (``committed``) and a later run may resume from there. Events are
stored once whatever happens: each is claimed by its id in ``event_ids``, so a rerun of
lines already imported stores nothing again.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from opportune.core.events import Batch, Context, Event
from opportune.core.history import (
    HistoryEvent,
    LineError,
    check_header,
    decode_csv_row,
    decode_json_line,
    identify_for,
)
from opportune.engine.ingest import IngestError, Ingestor
from opportune.store import rollups
from opportune.store.schema import sessions
from opportune.workspace import Site

# A decoded line: its number and the event, or its number and why it was refused.
Line = tuple[int, HistoryEvent | LineError]


@dataclass(frozen=True, slots=True)
class Problem:
    """A line not imported: its number, the event's id if it had one, and why."""

    line: int
    event_id: str | None
    reason: str

    def __str__(self) -> str:
        what = f" (event {self.event_id})" if self.event_id else ""
        return f"line {self.line}{what}: {self.reason}"


@dataclass(slots=True)
class ImportSummary:
    """What an import did, line by line counted.

    >>> s = ImportSummary(lines=3, imported=2, duplicates=0)
    >>> s.add_problem(Problem(3, "e3", "type: Invalid enum value 'x'"), keep=10)
    >>> s.refused, s.to_json()["problems"][0]["line"]
    (1, 3)
    """

    lines: int = 0
    # Events (those of the lines and the identify events made from their customerId):
    imported: int = 0  # stored now
    duplicates: int = 0  # stored before (a rerun)
    refused: int = 0  # lines refused (a line whose customerId is refused counts once more)
    identities: int = 0  # identify events made from lines' customerId
    visitors: int = 0  # visitors new to the store (a count, not a set: imports are large)
    first_ts: int | None = None
    last_ts: int | None = None
    problems: list[Problem] = field(default_factory=list)  # the first ``keep`` of them
    last_line: int = 0  # the last line whose window is committed
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU (all its threads) meanwhile

    def add_problem(self, problem: Problem, *, keep: int) -> None:
        self.refused += 1
        if len(self.problems) < keep:
            self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "identities": self.identities,
            "visitors": self.visitors,
            "firstTs": self.first_ts,
            "lastTs": self.last_ts,
            "lastLine": self.last_line,
            "seconds": round(self.seconds, 3),
            "cpuSeconds": round(self.cpu_seconds, 3),
            "problems": [
                {"line": p.line, "id": p.event_id, "reason": p.reason} for p in self.problems
            ],
        }


@dataclass(slots=True)
class _Part:
    """A batch of one visitor's events, with each one's line and the indexes of identify
    events made from a line's customerId."""

    events: list[Event]
    lines: list[int]
    made: set[int]
    batch: Batch | None = None


class HistoryImport:
    """One import into one site; ``run`` takes decoded lines and returns the summary.

    >>> HistoryImport.__name__
    'HistoryImport'
    """

    def __init__(
        self,
        ingestor: Ingestor,
        site: Site,
        *,
        window: int = 50_000,
        keep_problems: int = 1_000,
        on_problem: Callable[[Problem], None] | None = None,
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.ingestor = ingestor
        self.site = site
        self.window = window
        self.keep_problems = keep_problems
        self.on_problem = on_problem
        self.clock = clock
        self.summary = ImportSummary()
        # The customer each visitor was last linked to by a line's customerId (this run):
        # the identify is made when it changes, not on every line.
        self._customer_of: dict[str, str] = {}
        self._problems: list[Problem] = []  # the window's, told in line order at its end
        # What the run stored, for the reports' rollups: their background pass follows
        # receipts and would never see history (received, for the pipeline, at its own ts).
        self._visitors: set[str] = set()
        self._span: tuple[int, int] | None = None

    async def run(
        self, lines: Iterable[Line], *, committed: Callable[[ImportSummary], None] | None = None
    ) -> ImportSummary:
        """Import every line; ``committed`` is called after each window is durable."""
        started = (time.perf_counter(), time.process_time())
        window: list[tuple[int, HistoryEvent]] = []
        last = self.summary.last_line
        for number, item in lines:
            self.summary.lines += 1
            last = number
            if isinstance(item, LineError):
                self._problem(Problem(number, None, str(item)))
            else:
                window.append((number, item))
            if self.summary.lines % self.window == 0:
                await self._window(window, last, committed, started)
                window = []
        await self._window(window, last, committed, started)
        await asyncio.to_thread(self._recount_reports)
        return self.summary

    def _recount_reports(self) -> None:
        """Recount the reports' rollups of the quarters the stored visits span (in one
        transaction, as an erasure does): imported history is in the reports at once."""
        if self._span is None or not self._visitors:
            return
        low, high = self._span
        visitors = sorted(self._visitors)
        with self.ingestor.engine.begin() as conn:
            sids: set[str] = set()
            for i in range(0, len(visitors), 500):
                chunk = visitors[i : i + 500]
                q = select(sessions.c.id).where(
                    sessions.c.visitor_id.in_(chunk),
                    sessions.c.last_event_at >= low,
                    sessions.c.started_at <= high,
                )
                sids.update(r[0] for r in conn.execute(q))
            rollups.recount_quarters(conn, rollups.visit_quarters(conn, sorted(sids)))

    async def _window(
        self,
        window: list[tuple[int, HistoryEvent]],
        last: int,
        committed: Callable[[ImportSummary], None] | None,
        started: tuple[float, float],
    ) -> None:
        by_visitor: dict[str, list[tuple[int, HistoryEvent]]] = {}
        for item in window:
            by_visitor.setdefault(item[1].visitor_id, []).append(item)
        now = self.clock()
        # In visitor order: the group commits then insert events in the order of the
        # events table's key (visitor, ts, id), page after page, not all over the tree.
        visitors = [self._batches(vid, by_visitor[vid]) for vid in sorted(by_visitor)]
        new: set[str] = set()
        if visitors:
            new = await self.ingestor.prepare_history(
                self.site, [p.batch for parts in visitors for p in parts if p.batch is not None]
            )
        await asyncio.gather(*(self._visitor(parts, now, new) for parts in visitors))
        self._problems.sort(key=lambda p: p.line)
        for problem in self._problems:
            self.summary.add_problem(problem, keep=self.keep_problems)
            if self.on_problem is not None:
                self.on_problem(problem)
        self._problems = []
        self.summary.last_line = last
        self.summary.seconds = time.perf_counter() - started[0]
        self.summary.cpu_seconds = time.process_time() - started[1]
        if committed is not None:
            committed(self.summary)

    def _batches(self, vid: str, items: list[tuple[int, HistoryEvent]]) -> list[_Part]:
        """One visitor's events of the window in time order (ties keep the file's order),
        cut after each identify (and the events of its millisecond): live, a customer's
        assignments from other devices join after the identifying batch, and training
        replays visits that way (from the first event received after the link)."""
        items.sort(key=lambda item: (item[1].ts, item[0]))
        parts: list[_Part] = []
        part = _Part([], [], set())
        cut_after: int | None = None  # an identify's time: the next later event starts a part
        for number, ev in items:
            if cut_after is not None and ev.ts > cut_after and part.events:
                parts.append(part)
                part = _Part([], [], set())
                cut_after = None
            cid = ev.customer_id
            if cid is not None and self._customer_of.get(vid) != cid and ev.type != "identify":
                part.made.add(len(part.events))
                part.events.append(identify_for(ev))
                part.lines.append(number)
                self._customer_of[vid] = cid
                cut_after = ev.ts
            part.events.append(ev)
            part.lines.append(number)
            if ev.type == "identify":
                cut_after = ev.ts
        if part.events:
            parts.append(part)
        first = items[0][1]
        for p in parts:
            p.batch = Batch(
                site_key=self.site.key,
                visitor_id=vid,
                sent_at=p.events[-1].ts,
                events=p.events,
                context=first.context or Context(),
            )
        return parts

    async def _visitor(self, parts: list[_Part], now: int, new: set[str]) -> None:
        accepted = 0
        for part in parts:  # in order: each waits for the one before
            accepted += await self._part(part, now)
        batch = parts[0].batch
        if accepted and batch is not None and batch.visitor_id in new:
            self.summary.visitors += 1

    async def _part(self, part: _Part, now: int) -> int:
        """One batch of a visitor through the pipeline's historical mode (its refusals
        noted); how many of its events were stored."""
        batch, lines, made = part.batch, part.lines, part.made
        assert batch is not None
        # The device and place of the visitor's first line (where a visit starts).
        first = next(ev for ev in batch.events if isinstance(ev, HistoryEvent))
        headers = {"user-agent": first.user_agent} if first.user_agent else {}
        try:
            result = await self.ingestor.ingest_history(
                batch, self.site, now_ms=now, headers=headers, peer=first.ip
            )
        except IngestError as exc:  # the whole visitor refused (e.g. another site's)
            for i, ev in enumerate(batch.events):
                if i not in made:
                    self._problem(Problem(lines[i], ev.id, exc.message))
            return 0
        events = batch.events
        for r in result.refused:
            if r.index in made:
                ev = events[r.index + 1]
                self._problem(Problem(lines[r.index], ev.id, f"customerId: {r.reason}"))
            else:
                self._problem(Problem(lines[r.index], r.id, r.reason))
        s = self.summary
        s.identities += len(made)
        s.imported += result.accepted
        if result.accepted:
            self._visitors.add(batch.visitor_id)
            lo, hi = events[0].ts, events[-1].ts
            self._span = (
                (lo, hi) if self._span is None else (min(self._span[0], lo), max(self._span[1], hi))
            )
        s.duplicates += result.duplicates
        low, high = events[0].ts, events[-1].ts
        s.first_ts = low if s.first_ts is None else min(s.first_ts, low)
        s.last_ts = high if s.last_ts is None else max(s.last_ts, high)
        return result.accepted

    def _problem(self, problem: Problem) -> None:
        self._problems.append(problem)


class LineReader:
    """Lines of a JSON-lines or CSV stream (binary), decoded, numbered from 1 as an editor
    numbers them, with the byte offset read so far (where a resumed run starts again).

    >>> import io
    >>> r = LineReader(io.BytesIO(b'{"visitorId": "v", "id": "e", "type": "idle", "ts": 1}\\n'))
    >>> [(n, type(x).__name__) for n, x in r], r.offset
    ([(1, 'LineError')], 55)
    """

    def __init__(self, stream: Any, *, fmt: str = "jsonl", offset: int = 0, line: int = 0) -> None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"unknown format {fmt!r}: jsonl or csv")
        self.stream = stream
        self.fmt = fmt
        self.offset = offset
        self.line = line
        self.header: list[str] | None = None

    def __iter__(self) -> Iterator[Line]:
        return self._csv() if self.fmt == "csv" else self._jsonl()

    def _raw(self) -> Iterator[bytes]:
        for raw in self.stream:
            self.offset += len(raw)
            self.line += 1
            yield raw

    def _jsonl(self) -> Iterator[Line]:
        for raw in self._raw():
            if not raw.strip():
                continue
            try:
                yield self.line, decode_json_line(raw)
            except LineError as exc:
                yield self.line, exc

    def read_header(self) -> list[str]:
        """The CSV header (the first line), checked; a resumed run reads it, then seeks."""
        first = self.stream.readline()
        self.header = next(csv.reader([first.decode("utf-8-sig")]), [])
        check_header(self.header)
        if self.offset == 0:
            self.offset, self.line = len(first), 1
        return self.header

    def _csv(self) -> Iterator[Line]:
        header = self.header if self.header is not None else self.read_header()
        texts = (raw.decode("utf-8", "replace") for raw in self._raw())
        for row in csv.reader(texts):
            if not row:
                continue
            if len(row) > len(header):
                yield (
                    self.line,
                    LineError(f"{len(row)} cells; the header has {len(header)} columns"),
                )
                continue
            try:
                yield self.line, decode_csv_row(dict(zip(header, row, strict=False)))
            except LineError as exc:
                yield self.line, exc
