"""``opportune config``: workspace configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def config() -> None:
    """Workspace configuration."""


@config.command("validate")
@click.argument("folder", type=click.Path(path_type=Path))
def config_validate(folder: Path) -> None:
    """Validate a workspace folder; print every problem with file, line and field."""
    from opportune.workspace import ConfigError, load_workspace

    try:
        ws = load_workspace(folder)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo(
        f"ok: {len(ws.sites)} site(s), {len(ws.segments)} segment(s), "
        f"{len(ws.outcomes)} outcome(s), {len(ws.page_groups)} page group(s), "
        f"{len(ws.action_maps)} action map(s), {len(ws.queues)} queue(s)"
    )
