"""Retraining the KPI models of predictive routing on a schedule, from the server.

The same shape as the outcome models' loop (``ml/schedule.py``): when a predictive queue's
newest model is older than the interval (or it has none) and its history is ready, the
loop runs ``opportune train routing`` for the due queues in a child process at low
priority, then tells the caller which queues' active version changed (to reload them).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine

from opportune.core.kpis import DAY_MS, ReadinessThresholds, history_stats, readiness
from opportune.engine.rules import RuleBook
from opportune.ml.routing_history import load_history
from opportune.ml.routing_registry import RoutingRegistry
from opportune.ml.schedule import DEFAULT_INTERVAL_S, _in_thread, _run_training, retrain_due
from opportune.settings import Settings

log = logging.getLogger(__name__)


def predictive_queues(rules: RuleBook) -> list[str]:
    """Queues with predictive routing on and a defined KPI: those a model is trained for
    (KPIs and queue KPIs set over the API included)."""
    kpis = rules.kpis()
    return [n for n, q in rules.queues().items() if q.predictive.enabled and q.kpi in kpis]


def routing_train_command(settings: Settings, queues: Sequence[str], days: int) -> list[str]:
    """The ``opportune train routing`` command line for ``queues`` with these settings;
    ``--force`` because the loop has checked readiness (with its own thresholds) already."""
    cmd = [sys.executable, "-m", "opportune.cli", "train", "routing", "--days", str(days)]
    cmd += ["--force"]
    cmd += ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        cmd += ["--database-url", settings.database_url]
    if settings.workspace is not None:
        cmd += ["--workspace", str(settings.workspace)]
    for q in queues:
        cmd += ["--queue", q]
    if shutil.which("nice"):
        cmd = ["nice", "-n", "10", *cmd]
    return cmd


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
    """Retrain every predictive queue's KPI model when due; run until cancelled."""
    registry = RoutingRegistry(settings.data_dir / "routing-models")
    attempted: dict[str, int] = {}
    if first_check_s > 0:
        await asyncio.sleep(first_check_s)
    while True:
        try:
            now = int(clock() * 1000)
            queues = predictive_queues(rules)
            due = [
                q
                for q in queues
                if retrain_due(
                    max(registry.last_trained_at(q) or 0, attempted.get(q, 0)) or None,
                    interval_s,
                    now,
                )
            ]
            if due:
                runnable = await _in_thread(ready_queues, engine, rules, due, now, days, thresholds)
                if runnable:
                    before = {q: registry.active_version(q) for q in runnable}
                    await _run_training(routing_train_command(settings, runnable, days))
                    for q in runnable:
                        attempted[q] = now
                    changed = [q for q in runnable if registry.active_version(q) != before[q]]
                    if changed and on_activated is not None:
                        on_activated(changed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled routing retraining failed; trying again later")
        await asyncio.sleep(check_every_s)
