"""What the commands meet in normal use, said in one line with the fix, not a traceback:
a port taken, a database locked or away, a data folder that cannot be written, a workspace
that does not validate. Anything else is a bug, and keeps its traceback."""

from __future__ import annotations

import errno
from typing import Any

import click

from opportune.cli.options import SETTINGS_KEY, exit_invalid_workspace, fail
from opportune.settings import Settings

_DATA = "--data-dir or OPPORTUNE_DATA_DIR"
_URL = "--database-url or OPPORTUNE_DATABASE_URL"


class Guarded(click.Group):
    """The ``opportune`` group: an error of normal use ends the command with ``error: …``
    on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            from opportune.workspace import ConfigError

            if isinstance(exc, ConfigError):
                exit_invalid_workspace(exc.problems)
            message = explained(exc, ctx.meta.get(SETTINGS_KEY))
            if message is None:
                raise
            fail(message)


def explained(exc: BaseException, settings: Settings | None) -> str | None:
    """One line saying what went wrong and what to do, or None for an error not foreseen."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        return _database(exc, settings)
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS, errno.ENOSPC):
        what = exc.filename or "a data file"
        why = "the disk is full" if exc.errno == errno.ENOSPC else "permission denied"
        return f"cannot write {what}: {why}; choose a folder you can write to ({_DATA})"
    return None


def _database(exc: Any, settings: Settings | None) -> str:
    """A database error of normal use: locked, away, not a database, or what it said."""
    said = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    where = _where(settings)
    if "database is locked" in said:
        return (
            f"the database {where} is locked: another process (a server, a training, another "
            "command) kept it busy for 30 s; try again, or stop that process first"
        )
    if "unable to open database file" in said:
        return f"cannot open the database {where}: its folder must exist and be writable ({_DATA})"
    if "file is not a database" in said:
        return f"{where} is not an SQLite database: point {_DATA} at another folder"
    if "connection" in said.lower() and ("refused" in said or "failed" in said):
        return f"cannot connect to the database {where}: is it running? ({_URL}); it said: {said}"
    return f"the database {where} refused: {said}"


def _where(settings: Settings | None) -> str:
    if settings is None:
        return "configured"
    from sqlalchemy.engine import make_url

    url = make_url(settings.resolved_database_url())
    if url.drivername.startswith("sqlite"):
        return str(url.database)
    return url.set(drivername="postgresql").render_as_string(hide_password=True)
