"""``opportune gdpr``: a customer's data exported or erased; data past retention purged."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from opportune.cli.options import database_options, fail, open_database, settings_from


@click.group()
def gdpr() -> None:
    """Export or erase a customer's data; purge data past retention."""


def _counts(value: Any) -> str:
    """A dataclass of counts as JSON (its lists left out)."""
    if hasattr(value, "__dataclass_fields__"):
        value = {k: v for k, v in asdict(value).items() if not isinstance(v, list)}
    return json.dumps(value)


@gdpr.command("export")
@click.argument("customer_id")
@click.option("--out", type=click.Path(path_type=Path), help="File to write (default stdout)")
@database_options
def gdpr_export(customer_id: str, out: Path | None, **opts: Any) -> None:
    """Everything held about a customer, as JSON."""
    from opportune.store.customers import CustomerNotFound
    from opportune.store.gdpr import export_customer

    engine = open_database(settings_from(**opts))
    try:
        with engine.connect() as conn:
            data = export_customer(conn, customer_id)
    except CustomerNotFound as exc:
        fail(str(exc))
    text = json.dumps(data, indent=2, default=str)
    if out:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}")
    else:
        click.echo(text)


@gdpr.command("erase")
@click.argument("customer_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation")
@database_options
def gdpr_erase(customer_id: str, yes: bool, **opts: Any) -> None:
    """Erase a customer and all its visitors' data, irreversibly."""
    from opportune.store.customers import CustomerNotFound
    from opportune.store.gdpr import erase_customer

    if not yes:
        click.confirm(f"Erase customer {customer_id} irreversibly?", abort=True)
    engine = open_database(settings_from(**opts))
    try:
        with engine.begin() as conn:
            counts = erase_customer(conn, customer_id, now_ms=int(time.time() * 1000))
    except CustomerNotFound as exc:
        fail(str(exc))
    click.echo(_counts(counts))


@gdpr.command("purge")
@click.option("--days", type=int, help="Retention in days (default OPPORTUNE_RETENTION_DAYS)")
@database_options
def gdpr_purge(days: int | None, **opts: Any) -> None:
    """Delete events and sessions older than the retention period."""
    from opportune.store.gdpr import purge_older_than

    settings = settings_from(**opts)
    engine = open_database(settings)
    keep = days if days is not None else settings.retention_days
    if keep < 1:
        fail("--days must be at least 1", 2)
    cutoff = int(time.time() * 1000) - keep * 86_400_000
    with engine.begin() as conn:
        counts = purge_older_than(conn, cutoff)
    click.echo(_counts(counts))
