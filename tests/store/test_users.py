"""Users and sessions on SQLite and PostgreSQL: hashed passwords, sessions that lapse, renew and
end, and refusals that name the field."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from opportune.core.permissions import can
from opportune.store import users as store
from opportune.store.schema import user_sessions, users

HOUR = 3_600_000


def _ana(conn, **kw):  # type: ignore[no-untyped-def]
    fields = {
        "email": "Ana@Example.com",
        "name": "Ana Pérez",
        "role": "agent",
        "password": "correct horse battery",
        "now_ms": 1000,
        "agent_id": "ana",
    }
    fields.update(kw)
    return store.create_user(conn, **fields)


def test_a_password_is_stored_hashed_and_checked(engine: Engine) -> None:
    with engine.begin() as conn:
        ana = _ana(conn)
        stored = conn.execute(select(users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert ana.email == "ana@example.com" and ana.role == "agent"
    with engine.begin() as conn:
        assert store.authenticate(conn, " ANA@example.com ", "correct horse battery") == ana
        assert store.authenticate(conn, "ana@example.com", "wrong horse battery") is None
        assert store.authenticate(conn, "nobody@example.com", "correct horse battery") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"email": "not-an-email"}, "email: 'not-an-email' is not an email address"),
        ({"name": " "}, "name: between 1 and 128 characters"),
        ({"role": "root"}, "role: one of admin, supervisor, agent, not 'root'"),
        ({"password": "short"}, "password: at least 10 characters"),
        ({"agent_id": None}, "agent_id: an agent user names the routing agent they are"),
    ],
)
def test_bad_fields_are_refused_by_name(engine: Engine, change, message) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn, pytest.raises(store.UserError) as err:
        _ana(conn, **change)
    assert str(err.value) == message


def test_an_email_or_agent_taken_is_refused_and_nothing_half_stored(engine: Engine) -> None:
    with engine.begin() as conn:
        _ana(conn)
        with pytest.raises(store.UserError, match="email: already taken"):
            _ana(conn, agent_id="ana2")
        with pytest.raises(store.UserError, match="agent_id: already taken"):
            _ana(conn, email="other@example.com")
        assert len(store.list_users(conn)) == 1


def test_a_session_opens_renews_lapses_and_ends(engine: Engine) -> None:
    with engine.begin() as conn:
        ana = _ana(conn)
        token, session = store.start_session(conn, ana, now_ms=1000)
        stored = conn.execute(select(user_sessions.c.token_hash)).scalar_one()
    assert token not in stored and len(session.csrf) >= 24
    with engine.begin() as conn:
        again = store.session_of(conn, token, now_ms=1000 + HOUR)
        assert again is not None and again.user == ana and again.csrf == session.csrf
        assert again.expires_at == 1000 + HOUR + store.SESSION_MS  # renewed as used
        assert store.session_of(conn, token + "x", now_ms=2000) is None
        assert store.session_of(conn, None, now_ms=2000) is None
        assert store.session_of(conn, token, now_ms=again.expires_at) is None  # lapsed
    with engine.begin() as conn:
        token2, _ = store.start_session(conn, ana, now_ms=5000)
        store.end_session(conn, token2)
        assert store.session_of(conn, token2, now_ms=5001) is None


def test_a_new_password_or_disabling_ends_every_session(engine: Engine) -> None:
    with engine.begin() as conn:
        ana = _ana(conn)
        t1, _ = store.start_session(conn, ana, now_ms=1000)
        store.set_password(conn, ana.id, "a brand new password")
        assert store.session_of(conn, t1, now_ms=1001) is None
        assert store.authenticate(conn, ana.email, "correct horse battery") is None
        assert store.authenticate(conn, ana.email, "a brand new password") is not None
        t2, _ = store.start_session(conn, ana, now_ms=2000)
        store.disable(conn, ana.id, now_ms=2001)
        assert store.session_of(conn, t2, now_ms=2002) is None
        assert store.authenticate(conn, ana.email, "a brand new password") is None


def test_the_principal_carries_the_queues_that_apply_to_the_role(engine: Engine) -> None:
    with engine.begin() as conn:
        ana = _ana(conn)
        sue = store.create_user(
            conn,
            email="sue@example.com",
            name="Sue",
            role="supervisor",
            password="supervising well",
            now_ms=1000,
            queues=["sales", "sales"],
        )
    assert store.principal(ana, ["support"]).queues == {"support"}
    p = store.principal(sue, ["ignored"])
    assert p.queues == {"sales"} and can(p, "monitor", queue="sales")
    assert not can(p, "monitor", queue="support")


def test_expired_sessions_are_purged(engine: Engine) -> None:
    with engine.begin() as conn:
        ana = _ana(conn)
        store.start_session(conn, ana, now_ms=0)
        store.start_session(conn, ana, now_ms=store.SESSION_MS)
        assert store.purge_sessions(conn, now_ms=store.SESSION_MS + 1) == 1
