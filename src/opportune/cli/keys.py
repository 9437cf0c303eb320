"""``opportune keys``: the admin API's keys: create (shown once), list, revoke.

A key's scope is ``read``, ``write`` or ``admin`` (docs/api.md). The database keeps only a
hash of each key, so a lost key cannot be shown again: revoke it and create another.
``OPPORTUNE_API_KEY``, when set, is one more admin key beside these.
"""

from __future__ import annotations

import time
from typing import Any

import click

from opportune.cli.options import common, fail, open_database, settings_from


@click.group()
def keys() -> None:
    """API keys of the admin API (X-API-Key), with scopes."""


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000)) if ms else ""


@keys.command("create")
@click.option("--name", required=True, help="Who or what uses the key (e.g. 'crm sync')")
@click.option(
    "--scope",
    type=click.Choice(["read", "write", "admin"]),
    required=True,
    help="read: GET and checks; write: changes; admin: also personal data and identity",
)
@common
def keys_create(name: str, scope: str, **opts: Any) -> None:
    """Create a key; it is printed once, on stdout alone, and never stored in clear."""
    from opportune.store.api_keys import ApiKeyError, create

    engine = open_database(settings_from(**opts))
    try:
        with engine.begin() as conn:
            row, key = create(conn, name=name, scope=scope, now_ms=int(time.time() * 1000))
    except ApiKeyError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    click.echo(f"created {row.scope} key {row.id} ({row.name}); it is shown only now:", err=True)
    click.echo(key)


@keys.command("list")
@common
def keys_list(**opts: Any) -> None:
    """Every key: id, scope, name, created, revoked."""
    from opportune.store.api_keys import listed

    engine = open_database(settings_from(**opts))
    try:
        with engine.connect() as conn:
            everyone = listed(conn)
    finally:
        engine.dispose()
    if not everyone:
        click.echo("no keys yet: opportune keys create --name … --scope read|write|admin")
        return
    for k in everyone:
        revoked = f"  REVOKED {_when(k.revoked_at)}" if k.revoked_at else ""
        click.echo(f"{k.id}  {k.scope:<5}  {_when(k.created_at)}  {k.name}{revoked}")


@keys.command("revoke")
@click.argument("key_id")
@common
def keys_revoke(key_id: str, **opts: Any) -> None:
    """Revoke the key KEY_ID (from `keys list`); requests with it get 401 at once."""
    from opportune.store.api_keys import ApiKeyError, revoke

    engine = open_database(settings_from(**opts))
    try:
        with engine.begin() as conn:
            row = revoke(conn, key_id, now_ms=int(time.time() * 1000))
    except ApiKeyError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    click.echo(f"revoked {row.scope} key {row.id} ({row.name})")
