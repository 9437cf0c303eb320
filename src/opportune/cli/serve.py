"""``opportune serve``: the server."""

from __future__ import annotations

import gc
import os
from typing import Any

import click

from opportune.cli.options import (
    common,
    data_location,
    exit_invalid_workspace,
    server_options,
    settings_from,
)
from opportune.settings import Settings


def run_server(settings: Settings) -> None:
    """Build the app for ``settings`` and serve it until stopped."""
    # NumPy's OpenBLAS threads keep spinning after a small matrix operation (pacing) and
    # take the core from the event loop; the server's linear algebra is tiny. Set before
    # NumPy loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import uvicorn

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
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        loop="auto",
        http="auto",
    )


@click.command()
@common
@server_options("Key for the admin API (X-API-Key)")
def serve(**opts: Any) -> None:
    """Run the server (embedded SQLite by default, PostgreSQL with --database-url)."""
    settings = settings_from(**opts)
    click.echo(f"Opportune listening on http://{settings.host}:{settings.port}")
    click.echo(data_location(settings))
    run_server(settings)
