"""``opportune users``: the people who sign in to the agent workspace: add, list, change a
password, disable. Passwords are prompted for (twice) or read from stdin, never taken as an
argument (it would land in the shell's history and the process list)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from opportune.cli.options import common, fail, open_database, settings_from, stacked

_roles = click.Choice(["admin", "supervisor", "agent"])
password_options = stacked(
    click.option(
        "--password-stdin",
        is_flag=True,
        help="Read the password from the first line of stdin instead of prompting",
    ),
)


@click.group()
def users() -> None:
    """People who sign in to the agent workspace (/agent)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def read_password(from_stdin: bool) -> str:
    """The new password: stdin's first line, or typed twice at a hidden prompt."""
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            fail("password: nothing on stdin")
        return line
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _split(values: tuple[str, ...]) -> list[str]:
    """``--queues a,b --queues c`` as ``[a, b, c]``."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _workspace(opts: dict[str, Any]) -> Any:
    from opportune.api.app import EXAMPLE_WORKSPACE
    from opportune.cli.options import exit_invalid_workspace
    from opportune.workspace import ConfigError, load_workspace

    folder: Path = opts.get("workspace") or settings_from(**opts).workspace or EXAMPLE_WORKSPACE
    try:
        return load_workspace(folder)
    except ConfigError as exc:
        exit_invalid_workspace(exc.problems)


def check_against_workspace(ws: Any, role: str, agent: str | None, queues: list[str]) -> None:
    """The agent and queues named must exist in the workspace; queues are a supervisor's."""
    if agent is not None and agent not in ws.agents:
        known = ", ".join(sorted(ws.agents)) or "none"
        fail(f"agent: no agent {agent!r} in the workspace (agents: {known})")
    if role == "agent" and agent is None:
        fail("agent: an agent user names the routing agent they are (--agent ID)")
    if queues and role == "agent":
        fail("queues: an agent's queues come from the workspace; --queues is for supervisors")
    unknown = sorted(set(queues) - set(ws.queues))
    if unknown:
        fail(f"queues: unknown queue {unknown[0]!r} (queues: {', '.join(sorted(ws.queues))})")


def _find(conn: Any, email: str) -> Any:
    from opportune.store.users import list_users

    wanted = email.strip().lower()
    for u in list_users(conn):
        if u.email == wanted:
            return u
    fail(f"email: no user {wanted!r}")


@users.command("add")
@click.option("--email", required=True, help="Sign-in email (unique)")
@click.option("--name", required=True, help="Name shown in the workspace")
@click.option("--role", type=_roles, required=True, help="admin, supervisor or agent")
@click.option("--agent", "agent", help="The routing agent this user is (required for agents)")
@click.option("--queues", multiple=True, help="A supervisor's queues, comma separated")
@password_options
@common
def users_add(
    email: str,
    name: str,
    role: str,
    agent: str | None,
    queues: tuple[str, ...],
    password_stdin: bool,
    **opts: Any,
) -> None:
    """Add a user who signs in at /agent."""
    from opportune.store.users import UserError, create_user

    names = _split(queues)
    check_against_workspace(_workspace(opts), role, agent, names)
    password = read_password(password_stdin)
    engine = open_database(settings_from(**opts))
    try:
        with engine.begin() as conn:
            user = create_user(
                conn,
                email=email,
                name=name,
                role=role,  # type: ignore[arg-type]
                password=password,
                now_ms=_now_ms(),
                agent_id=agent,
                queues=names,
            )
    except UserError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    click.echo(f"added {user.role} {user.email}" + (f" (agent {agent})" if agent else ""))


@users.command("list")
@common
def users_list(**opts: Any) -> None:
    """Every user: email, role, agent, queues, whether disabled."""
    from opportune.store.users import list_users

    engine = open_database(settings_from(**opts))
    try:
        with engine.connect() as conn:
            everyone = list_users(conn)
    finally:
        engine.dispose()
    if not everyone:
        click.echo("no users yet: opportune users add --email … --name … --role …")
        return
    width = max(len(u.email) for u in everyone)
    for u in everyone:
        extra = [f"agent {u.agent_id}" if u.agent_id else "", ",".join(u.queues)]
        state = "  DISABLED" if u.disabled else ""
        line = f"{u.email:<{width}}  {u.role:<10}  {u.name}  {' '.join(e for e in extra if e)}"
        click.echo(line.rstrip() + state)


@users.command("passwd")
@click.argument("email")
@password_options
@common
def users_passwd(email: str, password_stdin: bool, **opts: Any) -> None:
    """Set a user's password; their open sessions end."""
    from opportune.store.users import UserError, set_password

    engine = open_database(settings_from(**opts))
    try:
        with engine.connect() as conn:
            user = _find(conn, email)
        password = read_password(password_stdin)
        with engine.begin() as conn:
            set_password(conn, user.id, password)
    except UserError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    click.echo(f"password changed for {user.email}; their sessions ended")


@users.command("disable")
@click.argument("email")
@common
def users_disable(email: str, **opts: Any) -> None:
    """Disable a user: they cannot sign in and their sessions end."""
    from opportune.store.users import disable

    engine = open_database(settings_from(**opts))
    try:
        with engine.begin() as conn:
            user = _find(conn, email)
            disable(conn, user.id, now_ms=_now_ms())
    finally:
        engine.dispose()
    click.echo(f"disabled {user.email}")
