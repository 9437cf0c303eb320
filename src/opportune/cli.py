"""The ``opportune`` command line: serve, demo, migrate, config, gdpr."""

from __future__ import annotations

import gc
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from opportune.settings import Settings


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the options given on the command line on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        for err in exc.errors():
            name = "OPPORTUNE_" + "_".join(str(p) for p in err["loc"]).upper()
            click.echo(f"error: setting {name}: {err['msg']}", err=True)
        sys.exit(2)


_common = [
    click.option("--data-dir", type=click.Path(path_type=Path), help="Folder for data files"),
    click.option("--database-url", help="sqlite:///path or postgresql://user@host/db"),
    click.option(
        "--workspace",
        type=click.Path(path_type=Path, exists=True, file_okay=False),
        help="Workspace folder of YAML documents",
    ),
]


def common(fn: Any) -> Any:
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


@click.group()
@click.version_option(package_name="opportune")
def main() -> None:
    """Opportune: predictive engagement and predictive routing, self-hosted."""


def _run_server(settings: Settings) -> None:
    import uvicorn

    from opportune.api.app import create_app
    from opportune.workspace import ConfigError

    try:
        app = create_app(settings)
    except ConfigError as exc:
        click.echo("error: the workspace does not validate:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(2)
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


@main.command()
@common
@click.option("--host")
@click.option("--port", type=int)
@click.option("--api-key", help="Key for the admin API (X-API-Key)")
def serve(**opts: Any) -> None:
    """Run the server (embedded SQLite by default, PostgreSQL with --database-url)."""
    settings = _settings(**opts)
    click.echo(f"Opportune listening on http://{settings.host}:{settings.port}")
    _run_server(settings)


@main.command()
@common
@click.option("--host")
@click.option("--port", type=int)
def demo(**opts: Any) -> None:
    """Start the server with the example workspace and the demo website."""
    api_key = secrets.token_urlsafe(18)
    settings = _settings(**opts, api_key=api_key)
    base = f"http://{settings.host}:{settings.port}"
    click.echo(f"Opportune demo on {base}/demo/  (data in {settings.data_dir}/)")
    click.echo(f"Admin API key for this run: {api_key}")
    click.echo(f"  e.g. curl -H 'X-API-Key: {api_key}' {base}/v1/visitors/<visitorId>")
    _run_server(settings)


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path))
@click.option("--database-url")
def migrate(**opts: Any) -> None:
    """Create or upgrade the database schema."""
    from opportune.store.db import current_revision, make_engine
    from opportune.store.db import migrate as run

    settings = _settings(**opts)
    engine = make_engine(settings.resolved_database_url())
    run(engine)
    click.echo(f"database at revision {current_revision(engine)}")


@main.group()
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
    click.echo(f"ok: {len(ws.sites)} site(s)")


@main.group()
def gdpr() -> None:
    """Export or erase a customer's data; purge data past retention."""


def _engine(opts: dict[str, Any]) -> Any:
    from opportune.store.db import make_engine
    from opportune.store.db import migrate as run

    settings = _settings(**opts)
    engine = make_engine(settings.resolved_database_url())
    run(engine)
    return engine, settings


@gdpr.command("export")
@click.argument("customer_id")
@click.option("--out", type=click.Path(path_type=Path), help="File to write (default stdout)")
@click.option("--data-dir", type=click.Path(path_type=Path))
@click.option("--database-url")
def gdpr_export(customer_id: str, out: Path | None, **opts: Any) -> None:
    """Everything held about a customer, as JSON."""
    from opportune.store.customers import CustomerNotFound, export_customer

    engine, _ = _engine(opts)
    try:
        with engine.connect() as conn:
            data = export_customer(conn, customer_id)
    except CustomerNotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    text = json.dumps(data, indent=2, default=str)
    if out:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}")
    else:
        click.echo(text)


@gdpr.command("erase")
@click.argument("customer_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation")
@click.option("--data-dir", type=click.Path(path_type=Path))
@click.option("--database-url")
def gdpr_erase(customer_id: str, yes: bool, **opts: Any) -> None:
    """Erase a customer and all its visitors' data, irreversibly."""
    from opportune.store.customers import CustomerNotFound, erase_customer

    if not yes:
        click.confirm(f"Erase customer {customer_id} irreversibly?", abort=True)
    engine, _ = _engine(opts)
    try:
        with engine.begin() as conn:
            counts = erase_customer(conn, customer_id, now_ms=int(time.time() * 1000))
    except CustomerNotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps(_jsonable(counts)))


@gdpr.command("purge")
@click.option("--days", type=int, help="Retention in days (default OPPORTUNE_RETENTION_DAYS)")
@click.option("--data-dir", type=click.Path(path_type=Path))
@click.option("--database-url")
def gdpr_purge(days: int | None, **opts: Any) -> None:
    """Delete events and sessions older than the retention period."""
    from opportune.store.customers import purge_older_than

    engine, settings = _engine(opts)
    keep = days if days is not None else settings.retention_days
    if keep < 1:
        click.echo("error: --days must be at least 1", err=True)
        sys.exit(2)
    cutoff = int(time.time() * 1000) - keep * 86_400_000
    with engine.begin() as conn:
        counts = purge_older_than(conn, cutoff)
    click.echo(json.dumps(_jsonable(counts)))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return {k: v for k, v in asdict(value).items() if not isinstance(v, list)}
    return value


if __name__ == "__main__":
    main()
