"""What the commands share: settings from the command line, the repeated option blocks,
the database they open and how a workspace that does not validate is reported."""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from opportune.settings import Settings

Decorator = Callable[[Any], Any]
# Where settings_from leaves the command's settings, for the error messages (cli/errors.py).
SETTINGS_KEY = "opportune.settings"


def settings_from(**overrides: Any) -> Settings:
    """Settings from the environment, with the options given on the command line on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        for err in exc.errors():
            name = "OPPORTUNE_" + "_".join(str(p) for p in err["loc"]).upper()
            click.echo(f"error: setting {name}: {err['msg']}", err=True)
        sys.exit(2)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[SETTINGS_KEY] = settings
    return settings


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
        port_checked,
        click.option("--host"),
        click.option("--port", type=int),
        click.option("--api-key", help=api_key_help),
    )


def port_checked(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` (with ``host`` and ``port`` options), first making sure it can listen
    there: a taken port is said before any start-up work (a demo trains models first)."""

    @wraps(command)
    def run(**opts: Any) -> Any:
        given = {k: opts.get(k) for k in ("host", "port")}
        settings = settings_from(**given)
        problem = listen_problem(settings.host, settings.port)
        if problem is not None:
            fail(problem)
        return command(**opts)

    return run


def listen_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` now, with the fix; None if it can."""
    try:
        _bind(host, port)
    except socket.gaierror:
        return f"cannot listen on {host!r}: not a name of this machine; --host 127.0.0.1 or 0.0.0.0"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            free = next((p for p in range(port + 1, min(port + 50, 65536)) if _free(host, p)), None)
            instead = f"start with --port {free}" if free else "start with another --port"
            return (
                f"port {port} on {host} is already in use (another Opportune, or another "
                f"program): {instead} (or OPPORTUNE_PORT), or stop what uses it"
            )
        if exc.errno == errno.EACCES:
            return f"not allowed to listen on port {port} (below 1024 needs root): --port 8000"
        if exc.errno == errno.EADDRNOTAVAIL:
            return f"cannot listen on {host}: not an address of this machine; --host 127.0.0.1"
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _bind(host: str, port: int) -> None:
    """Bind and let go, as the server will bind (SO_REUSEADDR, as uvicorn sets it)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    with socket.socket(family, kind, proto) as s:
        if sys.platform != "win32":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(address)


def _free(host: str, port: int) -> bool:
    try:
        _bind(host, port)
    except OSError:
        return False
    return True


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
    click.echo(
        "error: the workspace does not validate; fix these (`opportune config validate "
        "FOLDER` checks it again):",
        err=True,
    )
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
