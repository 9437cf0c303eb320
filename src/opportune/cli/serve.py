"""``opportune serve``: the server, in one process or in ``--workers N`` on one port.

With several workers uvicorn's supervisor binds the port once and starts N processes that
accept from it (it starts a worker again if one dies). This process first validates the
workspace and migrates the database once (N workers migrating at once would race), then
hands the workers their settings as ``OPPORTUNE_*`` environment. They share everything
through PostgreSQL and Redis (live state, Live Now, the chat bus), and their metrics
through prometheus_client's multiprocess files (docs/deployment.md).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from opportune.cli.options import (
    common,
    data_location,
    exit_invalid_workspace,
    fail,
    server_options,
    settings_from,
)
from opportune.settings import Settings

WORKER_APP = "opportune.cli.serve:worker_app"


def run_server(settings: Settings) -> None:
    """Build the app for ``settings`` and serve it until stopped."""
    # NumPy's OpenBLAS threads keep spinning after a small matrix operation (pacing) and
    # take the core from the event loop; the server's linear algebra is tiny. Set before
    # NumPy loads (the workers inherit it).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if settings.workers > 1:
        _run_workers(settings)
        return
    import uvicorn

    from opportune.api.logs import configure_logging

    configure_logging(settings)
    if settings.metrics_dir is not None:
        share_metrics(settings.metrics_dir)  # before prometheus_client is imported
    from opportune.api.app import create_app
    from opportune.workspace import ConfigError

    try:
        app = create_app(settings)
    except ConfigError as exc:
        exit_invalid_workspace(exc.problems)
    # Everything built at start-up lives as long as the process: keep the collector from
    # scanning it again and again.
    gc.collect()
    gc.freeze()
    uvicorn.run(_served(app, settings), **uvicorn_options(settings))


def workers_problem(settings: Settings) -> str | None:
    """Why ``settings`` cannot run several processes, with the fix; None if they can."""
    missing = []
    if not settings.database_url.startswith("postgresql"):
        missing.append("PostgreSQL (--database-url postgresql://user@host/db)")
    if not settings.redis_url:
        missing.append("Redis (OPPORTUNE_REDIS_URL=redis://host:6379/0)")
    if not missing:
        return None
    return (
        f"--workers {settings.workers} needs {' and '.join(missing)}: the processes share "
        "the database, the live state, Live Now and the chat bus, which SQLite and memory "
        "cannot; set them, or serve with --workers 1"
    )


def _run_workers(settings: Settings) -> None:
    import uvicorn

    from opportune.api.logs import configure_logging
    from opportune.store.db import make_engine, migrate
    from opportune.workspace import ConfigError, load_workspace

    problem = workers_problem(settings)
    if problem is not None:
        fail(problem, 2)
    configure_logging(settings)
    if settings.workspace is not None:
        try:
            load_workspace(settings.workspace)
        except ConfigError as exc:
            exit_invalid_workspace(exc.problems)
    engine = make_engine(settings.resolved_database_url())
    try:
        migrate(engine)
    finally:
        engine.dispose()
    made = settings.metrics_dir is None
    metrics_dir = settings.metrics_dir or Path(tempfile.mkdtemp(prefix="opportune-metrics-"))
    share_metrics(metrics_dir)
    settings = settings.model_copy(update={"metrics_dir": metrics_dir})
    os.environ.update(settings_environment(settings))
    try:
        uvicorn.run(WORKER_APP, factory=True, workers=settings.workers, **uvicorn_options(settings))
    finally:
        if made:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> Any:
    """One worker's app (uvicorn calls this in each process): the settings the supervisor
    put in the environment; the schema is already migrated."""
    from opportune.api.app import create_app
    from opportune.api.logs import configure_logging

    settings = Settings()
    configure_logging(settings)
    app = create_app(settings, auto_migrate=False)
    gc.collect()
    gc.freeze()
    return _served(app, settings)


def share_metrics(directory: Path) -> None:
    """Make ``directory`` the processes' metrics folder, emptied of an earlier run's files
    (their counters would otherwise be added to this run's)."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.db"):
        old.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def settings_environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``OPPORTUNE_*`` variables that give them back to ``Settings()``.

    >>> env = settings_environment(Settings(port=9000, webhook_secrets={"a": "b"}))
    >>> env["OPPORTUNE_PORT"], env["OPPORTUNE_WEBHOOK_SECRETS"], "OPPORTUNE_WORKSPACE" in env
    ('9000', '{"a": "b"}', False)
    """
    out = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        out[f"OPPORTUNE_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn runs the app: quiet, with its logging ours when logs are JSON, and the
    proxy's X-Forwarded-* believed only when the operator says a proxy sets them."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "access_log": False,
        "loop": "auto",
        "http": "auto",
    }
    if settings.log_format == "json":
        options["log_config"] = None
    if settings.trusted_proxy_headers:
        options["forwarded_allow_ips"] = "*"
    return options


def _served(app: Any, settings: Settings) -> Any:
    if settings.log_format != "json":
        return app
    from opportune.api.logs import RequestLog

    return RequestLog(app)


@click.command()
@common
@server_options("Key for the admin API (X-API-Key)")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Server processes on the port (OPPORTUNE_WORKERS); above 1 needs PostgreSQL and Redis",
)
def serve(**opts: Any) -> None:
    """Run the server (embedded SQLite by default, PostgreSQL with --database-url)."""
    settings = settings_from(**opts)
    if settings.workers > 1 and (problem := workers_problem(settings)) is not None:
        fail(problem, 2)
    workers = f" ({settings.workers} processes)" if settings.workers > 1 else ""
    click.echo(f"Opportune listening on http://{settings.host}:{settings.port}{workers}")
    click.echo(data_location(settings))
    run_server(settings)
