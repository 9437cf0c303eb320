"""``opportune migrate``: the database schema."""

from __future__ import annotations

from typing import Any

import click

from opportune.cli.options import database_options, open_database, settings_from


@click.command()
@database_options
def migrate(**opts: Any) -> None:
    """Create or upgrade the database schema."""
    from opportune.store.db import current_revision

    engine = open_database(settings_from(**opts))
    click.echo(f"database at revision {current_revision(engine)}")
