"""Retraining on a schedule (daily by default), from the server: outcome models and the KPI
models of predictive routing, in one loop shape.

When a model is due (``ml/schedule.py``: its newest version is older than the interval, or
it has none) and its history is ready, the loop runs ``opportune train`` (or ``train
routing``) for the due names in a **child process** at low priority: replaying visits is
CPU-bound Python, and in a thread it would hold the GIL against the event loop that answers
``/v1/events``. The child does everything ``train`` does (readiness, the activation rule,
the registry), so the loop only watches the registry for newly active versions and tells
the caller (e.g. to reload the scorer's models). ``train`` takes the registry's lock, so
two processes never train at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from opportune.core.kpis import DAY_MS, ReadinessThresholds, history_stats, readiness
from opportune.engine.rules import RuleBook
from opportune.ml.outcomes.registry import ModelRegistry
from opportune.ml.outcomes.training import DEFAULT_DAYS, check_readiness, scoring_enabled
from opportune.ml.registry import VersionRegistry
from opportune.ml.routing.registry import RoutingRegistry
from opportune.ml.schedule import DEFAULT_INTERVAL_S, due
from opportune.settings import Settings
from opportune.store.routing_history import load_history
from opportune.store.visits import StoredVisits

log = logging.getLogger(__name__)


def _cli(settings: Settings, args: Sequence[str]) -> list[str]:
    """``opportune <args>`` with the server's data directory, database and workspace, at
    low priority where ``nice`` exists."""
    cmd = [sys.executable, "-m", "opportune.cli", *args]
    cmd += ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        cmd += ["--database-url", settings.database_url]
    if settings.workspace is not None:
        cmd += ["--workspace", str(settings.workspace)]
    return cmd


def _niced(cmd: list[str]) -> list[str]:
    return ["nice", "-n", "10", *cmd] if shutil.which("nice") else cmd


def train_command(
    settings: Settings, outcomes: Sequence[str], days: int, threads: int = 2
) -> list[str]:
    """The ``opportune train`` command line for ``outcomes`` with the server's settings.

    >>> from pathlib import Path
    >>> cmd = train_command(Settings(data_dir=Path("/d")), ["signup"], 30, threads=1)
    >>> cmd[cmd.index("-m") + 1:][:8]
    ['opportune.cli', 'train', '--days', '30', '--threads', '1', '--data-dir', '/d']
    """
    args = ["train", "--days", str(days), "--threads", str(threads)]
    return _niced(_cli(settings, args) + [a for o in outcomes for a in ("--outcome", o)])


def routing_train_command(settings: Settings, queues: Sequence[str], days: int) -> list[str]:
    """The ``opportune train routing`` command line for ``queues`` with these settings;
    ``--force`` because the loop has checked readiness (with its own thresholds) already."""
    args = ["train", "routing", "--days", str(days), "--force"]
    return _niced(_cli(settings, args) + [a for q in queues for a in ("--queue", q)])


def outcome_docs(rules: RuleBook) -> list[object]:
    """The outcome documents of ``rules`` (workspace files and API alike)."""
    return [d for d, _src in rules.docs("outcome")]


def predictive_queues(rules: RuleBook) -> list[str]:
    """Queues with predictive routing on and a defined KPI: those a model is trained for
    (KPIs and queue KPIs set over the API included)."""
    kpis = rules.kpis()
    return [n for n, q in rules.queues().items() if q.predictive.enabled and q.kpi in kpis]


def ready_queues(
    engine: Engine,
    rules: RuleBook,
    queues: Sequence[str],
    now_ms: int,
    days: int,
    thresholds: ReadinessThresholds | None = None,
) -> list[str]:
    """Those of ``queues`` whose last ``days`` of history pass the readiness thresholds."""
    t = thresholds or ReadinessThresholds()
    out = []
    docs, kpis = rules.queues(), rules.kpis()
    with engine.connect() as conn:
        for q in queues:
            kpi = kpis[docs[q].kpi or ""].to_core()
            rows = load_history(conn, q, kpi, now_ms=now_ms, since_ms=now_ms - days * DAY_MS)
            stats = history_stats([(r.ended_at, r.agent_id, r.label) for r in rows], t)
            if readiness(kpi, stats, t).ready:
                out.append(q)
    return out


@dataclass(frozen=True, slots=True)
class Schedule:
    """When the loop looks: first after ``first_check_s``, then every ``check_every_s``;
    a model is due ``interval_s`` after its last training (``clock``: seconds)."""

    interval_s: float = DEFAULT_INTERVAL_S
    check_every_s: float = 600.0
    first_check_s: float = 0.0
    clock: Callable[[], float] = time.time


@dataclass(frozen=True, slots=True)
class Retraining:
    """What one kind of model's scheduled retraining needs: its registry, the names it
    trains now, which of the due ones are ready (blocking: run in a thread), and the
    command that trains them."""

    what: str  # for the log: "outcome", "routing"
    registry: VersionRegistry
    names: Callable[[], list[str]]
    ready: Callable[[list[str], int], list[str]]
    command: Callable[[list[str]], list[str]]


async def run_retraining(
    job: Retraining,
    schedule: Schedule = Schedule(),
    on_activated: Callable[[list[str]], Any] | None = None,
) -> None:
    """Retrain ``job``'s models when due; run until cancelled.

    After ``first_check_s`` seconds, then every ``check_every_s`` seconds: the names due (a
    failed or refused run counts as an attempt, so it is retried after ``interval_s``, not
    at once) whose history is ready are trained in one child process. ``on_activated`` is
    called with the names whose active version changed. Errors are logged; the loop goes on.
    """
    registry = job.registry
    attempted: dict[str, int] = {}
    if schedule.first_check_s > 0:
        await asyncio.sleep(schedule.first_check_s)
    while True:
        try:
            now = int(schedule.clock() * 1000)
            todo = due(
                job.names(),
                registry.last_trained_at,
                attempted,
                interval_s=schedule.interval_s,
                now_ms=now,
            )
            runnable = await _in_thread(job.ready, todo, now) if todo else []
            if runnable:
                before = {n: registry.active_version(n) for n in runnable}
                await _run_training(job.command(runnable))
                for n in runnable:
                    attempted[n] = now
                changed = [n for n in runnable if registry.active_version(n) != before[n]]
                if changed and on_activated is not None:
                    on_activated(changed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled %s retraining failed; trying again later", job.what)
        await asyncio.sleep(schedule.check_every_s)


async def retrain_loop(
    settings: Settings,
    rules: RuleBook,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    days: int = DEFAULT_DAYS,
    check_every_s: float = 600.0,
    first_check_s: float = 0.0,
    threads: int = 2,
    on_activated: Callable[[list[str]], Any] | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Retrain every scoring-enabled outcome when due (see :func:`run_retraining`)."""
    if rules.engine is None:
        raise ValueError("retrain_loop needs a RuleBook with an engine (the database)")
    history = StoredVisits(rules.engine)
    registry = ModelRegistry(settings.data_dir / "models")
    timeout_ms = settings.session_timeout_s * 1000

    def ready(names: list[str], now: int) -> list[str]:
        found = check_readiness(
            history,
            outcome_docs(rules),
            registry,
            names,
            since_ms=now - days * DAY_MS,
            until_ms=now - timeout_ms,
        )
        return [o for o in names if found[o].ready]

    job = Retraining(
        "outcome",
        registry,
        lambda: scoring_enabled(outcome_docs(rules)),
        ready,
        lambda names: train_command(settings, names, days, threads),
    )
    schedule = Schedule(interval_s, check_every_s, first_check_s, clock)
    await run_retraining(job, schedule, on_activated)


async def routing_retrain_loop(
    settings: Settings,
    rules: RuleBook,
    engine: Engine,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    days: int = 90,
    check_every_s: float = 600.0,
    first_check_s: float = 0.0,
    thresholds: ReadinessThresholds | None = None,
    on_activated: Callable[[list[str]], Any] | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Retrain every predictive queue's KPI model when due (see :func:`run_retraining`)."""
    job = Retraining(
        "routing",
        RoutingRegistry(settings.data_dir / "routing-models"),
        lambda: predictive_queues(rules),
        lambda names, now: ready_queues(engine, rules, names, now, days, thresholds),
        lambda names: routing_train_command(settings, names, days),
    )
    schedule = Schedule(interval_s, check_every_s, first_check_s, clock)
    await run_retraining(job, schedule, on_activated)


async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn`` in a thread; if the caller is cancelled meanwhile, the call still finishes
    before the cancellation goes on, so a shutdown never disposes of the database under a
    query in flight."""
    call = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await call
        raise


async def train_now(
    settings: Settings, outcomes: Sequence[str], days: int = DEFAULT_DAYS, threads: int = 2
) -> tuple[int, str]:
    """Train ``outcomes`` now, as the loop does when they are due: ``opportune train`` in a
    child process (its readiness check, activation rule and registry lock included). The
    exit status and the end of its output (the console's retrain button shows them)."""
    return await _run_training(train_command(settings, outcomes, days, threads))


async def _run_training(cmd: list[str]) -> tuple[int, str]:
    log.info("retraining: %s", " ".join(cmd))
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    try:
        out, _ = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        log.error("opportune train exited with %s:\n%s", proc.returncode, text[-4000:])
    else:
        log.info("opportune train:\n%s", text[-4000:])
    return int(proc.returncode or 0), text[-4000:]
