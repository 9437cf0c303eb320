"""``opportune reports rebuild``: the reports' rollups recounted from the raw tables."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

import click

from opportune.cli.options import database_options, fail, open_database, settings_from


@click.group()
def reports() -> None:
    """The reports' rollups (docs/reports.md)."""


def _since_ms(since: str | None) -> int:
    if since is None:
        return 0
    try:
        day = date.fromisoformat(since)
    except ValueError:
        fail(f"--since must be a date as YYYY-MM-DD (UTC), not {since!r}", 2)
    if day > datetime.now(UTC).date():
        fail(f"--since {since} is in the future: nothing to recount", 2)
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


@reports.command("rebuild")
@click.option("--site", help="Only this site's rollups (default every site)")
@click.option("--since", help="Recount from this UTC date on, YYYY-MM-DD (default all)")
@database_options
def reports_rebuild(site: str | None, since: str | None, **opts: Any) -> None:
    """Recount the reports' rollups from the raw tables (safe while the server runs)."""
    from sqlalchemy import select

    from opportune.store.rollups import rebuild
    from opportune.store.schema import report_rollups, sessions

    since_ms = _since_ms(since)
    engine = open_database(settings_from(**opts))
    try:
        if site is not None:
            with engine.connect() as conn:
                known = {
                    s
                    for t in (sessions, report_rollups)
                    for (s,) in conn.execute(select(t.c.site_id).group_by(t.c.site_id))
                }
            if site not in known:
                have = ", ".join(sorted(known)) or "none yet"
                fail(f"no site {site!r} in this database (sites with data: {have})", 2)
        t0 = time.perf_counter()
        done = rebuild(engine, site=site, since_ms=since_ms)
    finally:
        engine.dispose()
    click.echo(
        f"recounted {done.quarters} quarter hours ({done.quarters / 96:.1f} days) into "
        f"{done.rows} rollup rows in {time.perf_counter() - t0:.1f} s"
    )
