"""``opportune import events FILE``: a customer's history (JSON lines or CSV) into the
store, through the ingestion pipeline's historical mode (docs/import.md)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from opportune.cli.options import common, exit_invalid_workspace, fail, settings_from, shown


@click.group("import")
def import_group() -> None:
    """Import history: events of the past, as if the snippet had sent them then."""


@import_group.command("events")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--site", help="The site the events belong to (default: the workspace's only site)")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    help="jsonl or csv (default: from the file's extension; .csv is CSV, anything else JSONL)",
)
@click.option("--resume", is_flag=True, help="Go on from the checkpoint of an earlier run")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where the last committed line is recorded (default: FILE.checkpoint)",
)
@shown(
    "--window",
    type=click.IntRange(100, 1_000_000),
    default=50_000,
    help="Lines taken (and put in time order per visitor) at once; committed together",
)
@click.option("--quiet", is_flag=True, help="No progress bar")
@common
def import_events(
    file: Path,
    site: str | None,
    fmt: str | None,
    resume: bool,
    checkpoint: Path | None,
    window: int,
    quiet: bool,
    **opts: Any,
) -> None:
    """Import past events from FILE: one event a line, the /v1/events schema plus
    visitorId (and customerId), with the original ts. Safe to run again: an event id
    already stored is skipped."""
    from opportune.api.app import build_runtime
    from opportune.core.history import LineError
    from opportune.engine.imports import HistoryImport, LineReader
    from opportune.workspace import ConfigError

    settings = settings_from(**opts)
    try:
        runtime = build_runtime(settings)
    except ConfigError as exc:
        exit_invalid_workspace(exc.problems)
    sites = runtime.workspace.sites
    site = _site(sites, site)
    fmt = fmt or ("csv" if file.suffix.lower() == ".csv" else "jsonl")
    checkpoint = checkpoint or file.with_name(file.name + ".checkpoint")
    start = _start(checkpoint, file, resume)
    size = file.stat().st_size
    # An import's group commits may be larger than the server's: nobody waits for an answer.
    runtime.writer.max_events = max(runtime.writer.max_events, 20_000)
    importer = HistoryImport(
        runtime.ingestor,
        sites[site],
        window=window,
        on_problem=lambda p: click.echo(str(p), err=True),
    )
    bar = _Progress(size, enabled=not quiet and sys.stderr.isatty(), done=start["offset"])

    with file.open("rb") as stream:
        reader = LineReader(stream, fmt=fmt)
        if fmt == "csv":
            try:
                reader.read_header()
            except LineError as exc:
                fail(f"{file}: line 1: {exc}")
        if start["offset"]:
            stream.seek(start["offset"])
            reader.offset, reader.line = start["offset"], start["line"]
            click.echo(f"resuming after line {start['line']:,} ({checkpoint})", err=True)

        def committed(summary: Any) -> None:
            _write_checkpoint(checkpoint, file, summary.last_line, reader.offset)
            bar.update(reader.offset, summary)

        async def go() -> Any:
            try:
                return await importer.run(reader, committed=committed)
            finally:
                await runtime.aclose()

        # The collector's full passes over the server's heap (models, the rules) and the
        # window's events cost a third of an import's CPU (measured): the start-up heap is
        # set aside and the young generation collected less often.
        gc.freeze()
        gc.set_threshold(50_000, 50, 1_000)
        try:
            summary = asyncio.run(go())
        except Exception as exc:  # the database failed: what is committed stays
            bar.close()
            done = importer.summary.last_line
            fail(
                f"import stopped at line {reader.line:,}: {exc}; lines up to {done:,} are "
                f"stored; run again with --resume to go on"
            )
    bar.close()
    _say_summary(summary)


def _start(checkpoint: Path, file: Path, resume: bool) -> dict[str, int]:
    """Where to begin (the checkpoint's line and offset with --resume), the checkpoint
    written at once: a folder it cannot be written in is said now, not after a window."""
    start = _resume_point(checkpoint, file) if resume else {"line": 0, "offset": 0}
    try:
        _write_checkpoint(checkpoint, file, start["line"], start["offset"])
    except OSError as exc:
        fail(f"cannot write the checkpoint {checkpoint}: {exc.strerror}; give --checkpoint PATH")
    return start


def _site(sites: Any, site: str | None) -> str:
    """The site named, or the workspace's only one; one clear line otherwise."""
    if site is None:
        if len(sites) != 1:
            fail(f"the workspace has {len(sites)} sites; say which with --site ({_names(sites)})")
        site = next(iter(sites))
    if site not in sites:
        fail(f"no site {site!r} in the workspace; the sites are: {_names(sites)}")
    return site


def _say_summary(s: Any) -> None:
    """The run's last lines; exit 1 when a line was refused (the rest is stored)."""
    rate = s.imported / s.seconds if s.seconds else 0.0
    click.echo(
        f"{s.lines:,} lines: {s.imported:,} events imported, {s.duplicates:,} already stored, "
        f"{s.refused:,} refused; {s.visitors:,} new visitors; "
        f"{s.identities:,} identify events made from customerId; "
        f"{s.seconds:.1f} s ({rate:,.0f} events/s; {s.cpu_seconds:.1f} s of CPU)",
        err=True,
    )
    if s.refused:
        shown_ = len(s.problems)
        more = f" (the first {shown_:,} listed above)" if shown_ < s.refused else " (listed above)"
        fail(f"{s.refused:,} line(s) refused{more}; the rest is stored", code=1)


def _names(sites: Any) -> str:
    return ", ".join(sorted(sites)) or "none"


def _resume_point(checkpoint: Path, file: Path) -> dict[str, int]:
    if not checkpoint.exists():
        click.echo(f"no checkpoint at {checkpoint}: starting at the first line", err=True)
        return {"line": 0, "offset": 0}
    try:
        saved = json.loads(checkpoint.read_text(encoding="utf-8"))
        line, offset = int(saved["line"]), int(saved["offset"])
    except (ValueError, KeyError, TypeError):
        fail(f"{checkpoint} is not a checkpoint of `opportune import events`; delete it")
    if saved.get("file") != str(file.resolve()):
        fail(f"{checkpoint} is the checkpoint of {saved.get('file')}, not of {file}")
    if offset > file.stat().st_size:
        fail(f"{file} is shorter than when {checkpoint} was written: it changed; delete it")
    return {"line": line, "offset": offset}


def _write_checkpoint(path: Path, file: Path, line: int, offset: int) -> None:
    """The last committed line and the byte after it, replaced atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"file": str(file.resolve()), "line": line, "offset": offset}),
        encoding="utf-8",
    )
    os.replace(tmp, path)


class _Progress:
    """A one-line progress bar on stderr: bytes read of the file, events, events/s."""

    def __init__(self, size: int, *, enabled: bool, done: int = 0) -> None:
        self.size = max(size, 1)
        self.enabled = enabled
        self.started = time.monotonic()
        self.drawn = False
        self.first = done

    def update(self, offset: int, summary: Any) -> None:
        if not self.enabled:
            return
        part = offset / self.size
        filled = int(part * 30)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = summary.imported / elapsed
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {part:5.1%}  "
            f"{summary.lines:,} lines  {summary.imported:,} events  {rate:,.0f}/s "
        )
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            self.drawn = False
