"""Admin API keys with scopes, stored hashed: create, find by the key, list, revoke.

A key reads ``opk_<id>_<secret>``: ``id`` (10 hex characters) is public and names the row,
``secret`` is 32 random bytes (URL-safe base64). The row holds the SHA-256 of the whole key,
never the key: a copy of the database authenticates nobody. A plain hash suffices (no
argon2) because the secret is random and long, not a password a person chose; the
comparison is constant-time (``hmac.compare_digest``).

Scopes are ordered: ``read`` < ``write`` < ``admin``; a key may do what its scope and the
scopes below it allow (docs/api.md says which routes need which).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import Connection, insert, select, update

from opportune.store.schema import api_keys

Scope = Literal["read", "write", "admin"]
SCOPES: Final[tuple[Scope, ...]] = ("read", "write", "admin")
PREFIX: Final = "opk_"
_KEY = re.compile(r"^opk_([0-9a-f]{10})_[A-Za-z0-9_-]{20,}$")


class ApiKeyError(ValueError):
    """A key that cannot be created or revoked as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    scope: Scope
    created_at: int
    revoked_at: int | None


def allows(have: Scope, need: Scope) -> bool:
    """Whether a key of scope ``have`` may do what needs ``need``.

    >>> allows("admin", "write"), allows("read", "write"), allows("write", "write")
    (True, False, True)
    """
    return SCOPES.index(have) >= SCOPES.index(need)


def digest(key: str) -> str:
    """The stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def create(conn: Connection, *, name: str, scope: str, now_ms: int) -> tuple[ApiKey, str]:
    """A new key: its row and the key itself, which is shown once and never stored."""
    if scope not in SCOPES:
        raise ApiKeyError(f"scope {scope!r}: use one of {', '.join(SCOPES)}")
    name = name.strip()
    if not name or len(name) > 128:
        raise ApiKeyError("name: give 1 to 128 characters saying who or what uses the key")
    key_id = secrets.token_hex(5)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    conn.execute(
        insert(api_keys).values(
            id=key_id, name=name, scope=scope, key_hash=digest(key), created_at=now_ms
        )
    )
    return ApiKey(key_id, name, scope, now_ms, None), key


def find(conn: Connection, key: str) -> ApiKey | None:
    """The key's row when ``key`` is a valid, unrevoked key; else None."""
    m = _KEY.match(key)
    if m is None:
        return None
    row = conn.execute(select(api_keys).where(api_keys.c.id == m.group(1))).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, digest(key)):
        return None
    return ApiKey(row.id, row.name, row.scope, row.created_at, row.revoked_at)


def listed(conn: Connection) -> list[ApiKey]:
    """Every key, oldest first, revoked ones included (with when)."""
    rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id))
    return [ApiKey(r.id, r.name, r.scope, r.created_at, r.revoked_at) for r in rows]


def revoke(conn: Connection, key_id: str, *, now_ms: int) -> ApiKey:
    """Revoke the key with this id (the ``opk_<id>`` part also works); it stops at once."""
    key_id = key_id.removeprefix(PREFIX).split("_")[0]
    row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
    if row is None:
        raise ApiKeyError(f"no API key with id {key_id!r} (opportune keys list shows them)")
    if row.revoked_at is None:
        conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now_ms))
    return ApiKey(row.id, row.name, row.scope, row.created_at, row.revoked_at or now_ms)
