"""What the commands share: settings from the command line, the repeated option blocks,
the database they open and how a workspace that does not validate is reported."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from opportune.settings import Settings

Decorator = Callable[[Any], Any]


def settings_from(**overrides: Any) -> Settings:
    """Settings from the environment, with the options given on the command line on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        for err in exc.errors():
            name = "OPPORTUNE_" + "_".join(str(p) for p in err["loc"]).upper()
            click.echo(f"error: setting {name}: {err['msg']}", err=True)
        sys.exit(2)


def stacked(*options: Decorator) -> Decorator:
    """The options as one decorator, listed in ``--help`` in the order given."""

    def apply(fn: Any) -> Any:
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return apply


def shown(*decls: str, help: str | None = None, **kwargs: Any) -> Decorator:
    """An option whose default ``--help`` shows."""
    return click.option(*decls, show_default=True, help=help, **kwargs)


data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path))
database_options = stacked(data_dir_option, click.option("--database-url"))

common = stacked(
    click.option("--data-dir", type=click.Path(path_type=Path), help="Folder for data files"),
    click.option("--database-url", help="sqlite:///path or postgresql://user@host/db"),
    click.option(
        "--workspace",
        type=click.Path(path_type=Path, exists=True, file_okay=False),
        help="Workspace folder of YAML documents",
    ),
)


def server_options(api_key_help: str) -> Decorator:
    """Where the server listens, and its admin API key."""
    return stacked(
        click.option("--host"),
        click.option("--port", type=int),
        click.option("--api-key", help=api_key_help),
    )


def data_location(settings: Settings) -> str:
    """Where this process writes, in one line: the data folder (absolute) and the database."""
    from sqlalchemy.engine import make_url

    change = "--data-dir or OPPORTUNE_DATA_DIR to change"
    if not settings.database_url:
        return f"Data in {settings.data_dir}: the SQLite file opportune.db, the models ({change})"
    url = make_url(settings.resolved_database_url())
    url = url.set(drivername=url.drivername.split("+")[0])
    return (
        f"Data in {settings.data_dir} (the models; {change}) and in the database "
        f"{url.render_as_string(hide_password=True)}"
    )


def exit_invalid_workspace(problems: Any) -> NoReturn:
    """Print every problem of a workspace that does not validate; exit 2."""
    click.echo("error: the workspace does not validate:", err=True)
    for problem in problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(2)


def fail(message: str, code: int = 1) -> NoReturn:
    """``error: message`` on stderr, then exit ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def open_database(settings: Settings) -> Any:
    """The configured database's engine, its schema migrated to the latest revision."""
    from opportune.store.db import make_engine
    from opportune.store.db import migrate as run

    engine = make_engine(settings.resolved_database_url())
    run(engine)
    return engine
