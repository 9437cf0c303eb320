"""Retraining on a schedule (daily by default), from the server.

:func:`retrain_due` is the rule; :func:`retrain_loop` is the shell the server starts in its
lifespan. When an outcome is due (its newest version is older than the interval, or it has
none) and its history is ready, the loop runs ``opportune train`` for the due outcomes in a
**child process** at low priority: replaying visits is CPU-bound Python, and in a thread it
would hold the GIL against the event loop that answers ``/v1/events``. The child does
everything ``train`` does (readiness, the activation rule, the registry), so the loop only
watches the registry for newly active versions and tells the caller (e.g. to reload the
scorer's models). ``train`` takes the registry's lock, so two processes never train at once.
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
from typing import Any

from opportune.engine.rules import RuleBook
from opportune.ml.registry import ModelRegistry
from opportune.ml.training import DAY_MS, DEFAULT_DAYS, check_readiness, scoring_enabled
from opportune.settings import Settings

DEFAULT_INTERVAL_S = 86_400.0
# The server's first look waits this long: a process that just started (or a test client
# that lives a few seconds) has better things to do than count its history.
FIRST_CHECK_AFTER_S = 60.0
log = logging.getLogger(__name__)


def retrain_due(last_trained_ms: int | None, interval_s: float, now_ms: int) -> bool:
    """Whether a model last trained at ``last_trained_ms`` (None: never) is due at ``now_ms``.

    >>> retrain_due(None, 86_400, 0)
    True
    >>> retrain_due(1_000, 86_400, 1_000 + 86_399_999), retrain_due(1_000, 86_400, 86_401_000)
    (False, True)
    """
    return last_trained_ms is None or now_ms - last_trained_ms >= interval_s * 1000


def train_command(
    settings: Settings, outcomes: Sequence[str], days: int, threads: int = 2
) -> list[str]:
    """The ``opportune train`` command line for ``outcomes`` with the server's settings."""
    cmd = [sys.executable, "-m", "opportune.cli", "train", "--days", str(days)]
    cmd += ["--threads", str(threads)]
    cmd += ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        cmd += ["--database-url", settings.database_url]
    if settings.workspace is not None:
        cmd += ["--workspace", str(settings.workspace)]
    for o in outcomes:
        cmd += ["--outcome", o]
    if shutil.which("nice"):
        cmd = ["nice", "-n", "10", *cmd]
    return cmd


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
    """Retrain every scoring-enabled outcome when due; run until cancelled.

    After ``first_check_s`` seconds, then every ``check_every_s`` seconds: the outcomes
    due (see :func:`retrain_due`; a failed or refused run counts as an attempt, so it is
    retried after ``interval_s``, not at once) whose history is ready are trained in one
    child process. ``on_activated`` is called with the outcomes whose active version
    changed. Errors are logged; the loop goes on.
    """
    if rules.engine is None:
        raise ValueError("retrain_loop needs a RuleBook with an engine (the database)")
    engine = rules.engine
    registry = ModelRegistry(settings.data_dir / "models")
    attempted: dict[str, int] = {}
    timeout_ms = settings.session_timeout_s * 1000
    if first_check_s > 0:
        await asyncio.sleep(first_check_s)
    while True:
        try:
            now = int(clock() * 1000)
            enabled = scoring_enabled(rules)
            due = [
                o
                for o in enabled
                if retrain_due(
                    max(registry.last_trained_at(o) or 0, attempted.get(o, 0)) or None,
                    interval_s,
                    now,
                )
            ]
            if due:
                ready = await _in_thread(
                    check_readiness,
                    engine,
                    rules,
                    registry,
                    due,
                    since_ms=now - days * DAY_MS,
                    until_ms=now - timeout_ms,
                )
                runnable = [o for o in due if ready[o].ready]
                if runnable:
                    before = {o: registry.active_version(o) for o in runnable}
                    await _run_training(train_command(settings, runnable, days, threads))
                    for o in runnable:
                        attempted[o] = now
                    changed = [o for o in runnable if registry.active_version(o) != before[o]]
                    if changed and on_activated is not None:
                        on_activated(changed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled retraining failed; trying again later")
        await asyncio.sleep(check_every_s)


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


async def _run_training(cmd: list[str]) -> None:
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
