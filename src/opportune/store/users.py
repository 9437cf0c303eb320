"""Users and sign-in sessions in the database: create, check a password, open, read and end a
session, and the principal (role, agent, queues) a session stands for.

Passwords are hashed with argon2id (argon2-cffi, its recommended parameters); a wrong email
costs the same hash as a wrong password, so timing does not tell which emails exist. The
session cookie carries a random token; the table holds only its SHA-256, so a copy of the
database signs nobody in. Sessions expire after ``SESSION_MS`` and are renewed as they are
used, at most once a minute (not a write per request).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from opportune.core.permissions import ROLES, Principal, Role
from opportune.store.schema import user_sessions, users

SESSION_MS: Final = 12 * 3_600_000  # a working day and some
RENEW_EVERY_MS: Final = 60_000
MIN_PASSWORD: Final = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so both failures take one hash's time;
    made on first use rather than at import (a hash costs tens of milliseconds)."""
    return _hasher.hash(secrets.token_urlsafe(16))


class UserError(ValueError):
    """A user that cannot be created or changed as asked; the message names the field."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str
    role: Role
    agent_id: str | None
    queues: tuple[str, ...]  # a supervisor's; an agent's come from the workspace
    disabled: bool


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: the user, the CSRF token its forms carry, when it lapses."""

    user: User
    csrf: str
    expires_at: int


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check(email: str, name: str, role: str, password: str | None) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 254:
        raise UserError(f"email: {email!r} is not an email address")
    if not name.strip() or len(name) > 128:
        raise UserError("name: between 1 and 128 characters")
    if role not in ROLES:
        raise UserError(f"role: one of {', '.join(ROLES)}, not {role!r}")
    if password is not None and len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")
    return email


def create_user(
    conn: Connection,
    *,
    email: str,
    name: str,
    role: Role,
    password: str,
    now_ms: int,
    agent_id: str | None = None,
    queues: Iterable[str] = (),
) -> User:
    """A new user; :class:`UserError` for a bad field or an email / agent already taken."""
    email = _check(email, name, role, password)
    if role == "agent" and not agent_id:
        raise UserError("agent_id: an agent user names the routing agent they are")
    uid = secrets.token_hex(8)
    try:
        with conn.begin_nested():
            conn.execute(
                users.insert().values(
                    id=uid,
                    email=email,
                    name=name.strip(),
                    role=role,
                    agent_id=agent_id or None,
                    queues=json.dumps(sorted(set(queues))),
                    password_hash=_hasher.hash(password),
                    created_at=now_ms,
                )
            )
    except IntegrityError as exc:
        taken = conn.execute(select(users.c.id).where(users.c.email == email)).first()
        field = "email" if taken is not None else "agent_id"
        raise UserError(f"{field}: already taken by another user") from exc
    return get_user(conn, uid)


def get_user(conn: Connection, user_id: str) -> User:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise LookupError(user_id)
    return _user(row)


def list_users(conn: Connection) -> list[User]:
    return [_user(r) for r in conn.execute(select(users).order_by(users.c.email))]


def set_password(conn: Connection, user_id: str, password: str) -> None:
    """A new password; every session of the user ends (a changed password locks out
    whoever had the old one)."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")
    conn.execute(
        update(users).where(users.c.id == user_id).values(password_hash=_hasher.hash(password))
    )
    conn.execute(delete(user_sessions).where(user_sessions.c.user_id == user_id))


def disable(conn: Connection, user_id: str, *, now_ms: int) -> None:
    conn.execute(update(users).where(users.c.id == user_id).values(disabled_at=now_ms))
    conn.execute(delete(user_sessions).where(user_sessions.c.user_id == user_id))


def enable(conn: Connection, user_id: str) -> None:
    conn.execute(update(users).where(users.c.id == user_id).values(disabled_at=None))


def change_role(
    conn: Connection,
    user_id: str,
    *,
    role: Role,
    agent_id: str | None = None,
    queues: Iterable[str] = (),
) -> User:
    """A new role (an agent's routing agent, a supervisor's queues); every session of the
    user ends, so no page keeps the old role's rights. :class:`UserError` names the field."""
    if role not in ROLES:
        raise UserError(f"role: one of {', '.join(ROLES)}, not {role!r}")
    if role == "agent" and not agent_id:
        raise UserError("agent_id: an agent user names the routing agent they are")
    try:
        with conn.begin_nested():
            conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(
                    role=role,
                    agent_id=agent_id if role == "agent" else None,
                    queues=json.dumps(sorted(set(queues)) if role == "supervisor" else []),
                )
            )
    except IntegrityError as exc:
        raise UserError("agent_id: already taken by another user") from exc
    conn.execute(delete(user_sessions).where(user_sessions.c.user_id == user_id))
    return get_user(conn, user_id)


def delete_user(conn: Connection, user_id: str) -> None:
    """Forget the user and their sessions (what they did stays in the audit log by name)."""
    conn.execute(delete(user_sessions).where(user_sessions.c.user_id == user_id))
    conn.execute(delete(users).where(users.c.id == user_id))


def authenticate(conn: Connection, email: str, password: str) -> User | None:
    """The user with this email and password, or ``None`` (unknown, wrong or disabled)."""
    row = conn.execute(select(users).where(users.c.email == email.strip().lower())).first()
    try:
        _hasher.verify(row.password_hash if row is not None else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row.disabled_at is not None:
        return None
    if _hasher.check_needs_rehash(row.password_hash):
        conn.execute(
            update(users).where(users.c.id == row.id).values(password_hash=_hasher.hash(password))
        )
    return _user(row)


def start_session(conn: Connection, user: User, *, now_ms: int) -> tuple[str, Session]:
    """``(token for the cookie, session)``."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    expires = now_ms + SESSION_MS
    conn.execute(
        user_sessions.insert().values(
            token_hash=_digest(token),
            user_id=user.id,
            csrf=csrf,
            created_at=now_ms,
            expires_at=expires,
        )
    )
    return token, Session(user, csrf, expires)


def session_of(conn: Connection, token: str | None, *, now_ms: int) -> Session | None:
    """The live session of a cookie's token (renewed), or ``None``: unknown, expired, or
    its user disabled."""
    if not token or len(token) > 128:
        return None
    s = user_sessions.c
    row = conn.execute(
        select(user_sessions, users)
        .join(users, users.c.id == s.user_id)
        .where(s.token_hash == _digest(token))
    ).first()
    if row is None or row.expires_at <= now_ms or row.disabled_at is not None:
        return None
    expires = row.expires_at
    if now_ms + SESSION_MS - expires >= RENEW_EVERY_MS:
        expires = now_ms + SESSION_MS
        conn.execute(
            update(user_sessions).where(s.token_hash == row.token_hash).values(expires_at=expires)
        )
    return Session(_user(row), row.csrf, expires)


def end_session(conn: Connection, token: str) -> None:
    conn.execute(delete(user_sessions).where(user_sessions.c.token_hash == _digest(token)))


def purge_sessions(conn: Connection, *, now_ms: int) -> int:
    """Forget expired sessions; how many."""
    done = conn.execute(delete(user_sessions).where(user_sessions.c.expires_at <= now_ms))
    return int(done.rowcount or 0)


def principal(user: User, queues_of_agent: Iterable[str] = ()) -> Principal:
    """What the permission rules see of a user: an agent's queues are their memberships
    (from the workspace), a supervisor's those set on the user."""
    queues = frozenset(queues_of_agent) if user.role == "agent" else frozenset(user.queues)
    return Principal(user_id=user.id, role=user.role, agent_id=user.agent_id, queues=queues)


def _user(row: object) -> User:
    r = row._mapping  # type: ignore[attr-defined]
    return User(
        id=r["id"],
        email=r["email"],
        name=r["name"],
        role=r["role"],
        agent_id=r["agent_id"],
        queues=tuple(json.loads(r["queues"] or "[]")),
        disabled=r["disabled_at"] is not None,
    )
