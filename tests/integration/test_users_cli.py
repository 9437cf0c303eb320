"""`opportune users` on SQLite and PostgreSQL: add, list, passwd, disable, one-line errors
naming the field; and the demo's people, made once and given a fresh password each run."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Engine

from opportune.cli import main
from opportune.cli.demo import demo_people
from opportune.settings import Settings
from opportune.store import users

PW = "correct horse battery\n"


def run(db_url: str, *args: str, stdin: str | None = PW) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["users", *args, "--database-url", db_url], input=stdin)
    return r.exit_code, r.stdout, r.stderr


def test_add_list_passwd_disable(db_url: str, engine: Engine) -> None:
    add = ("add", "--email", "Ana@Bank.test", "--name", "Ana", "--role", "agent", "--agent", "ana")
    assert run(db_url, *add, "--password-stdin") == (
        0,
        "added agent ana@bank.test (agent ana)\n",
        "",
    )
    code, _, err = run(db_url, *add, "--password-stdin")
    assert (code, err) == (1, "error: email: already taken by another user\n")
    sup = ("add", "--email", "sue@bank.test", "--name", "Sue", "--role", "supervisor")
    assert run(db_url, *sup, "--queues", "loans,support", "--password-stdin")[0] == 0
    code, out, _ = run(db_url, "list", stdin=None)
    assert code == 0
    assert out.splitlines() == [
        "ana@bank.test  agent       Ana  agent ana",
        "sue@bank.test  supervisor  Sue  loans,support",
    ]
    with engine.begin() as conn:
        ana = users.authenticate(conn, "ana@bank.test", "correct horse battery")
        assert ana is not None
        token, _ = users.start_session(conn, ana, now_ms=1)
    code, out, _ = run(
        db_url, "passwd", "ANA@bank.test", "--password-stdin", stdin="a new long one\n"
    )
    assert (code, out) == (0, "password changed for ana@bank.test; their sessions ended\n")
    with engine.begin() as conn:
        assert users.session_of(conn, token, now_ms=2) is None
        assert users.authenticate(conn, "ana@bank.test", "a new long one") is not None
    assert run(db_url, "disable", "sue@bank.test", stdin=None)[0] == 0
    assert run(db_url, "list", stdin=None)[1].splitlines()[1].endswith("DISABLED")
    with engine.begin() as conn:
        assert users.authenticate(conn, "sue@bank.test", "correct horse battery") is None


def test_bad_input_is_one_line_naming_the_field(db_url: str) -> None:
    base = ("add", "--email", "x@bank.test", "--name", "X", "--password-stdin")
    cases = {
        ("--role", "agent", "--agent", "zed"): "error: agent: no agent 'zed' in the workspace "
        "(agents: ana, ben, carla, dev)",
        ("--role", "agent"): "error: agent: an agent user names the routing agent they are "
        "(--agent ID)",
        ("--role", "supervisor", "--queues", "loans,nope"): "error: queues: unknown queue "
        "'nope' (queues: loans, support)",
        ("--role", "agent", "--agent", "ana", "--queues", "loans"): "error: queues: an "
        "agent's queues come from the workspace; --queues is for supervisors",
    }
    for extra, message in cases.items():
        code, _, err = run(db_url, *base, *extra)
        assert (code, err) == (1, message + "\n"), extra
    code, _, err = run(db_url, *base, "--role", "admin", stdin="short\n")
    assert (code, err) == (1, "error: password: at least 10 characters\n")
    bad = ("add", "--email", "not-an-email", "--name", "X", "--role", "admin")
    code, _, err = run(db_url, *bad, "--password-stdin")
    assert (code, err) == (1, "error: email: 'not-an-email' is not an email address\n")
    code, _, err = run(db_url, "disable", "nobody@bank.test", stdin=None)
    assert (code, err) == (1, "error: email: no user 'nobody@bank.test'\n")
    assert run(db_url, "list", stdin=None)[1].startswith("no users yet")


def test_the_demo_people_are_made_once_with_a_fresh_password(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    settings = Settings(database_url=db_url, data_dir=tmp_path)
    first = demo_people(settings)
    assert [(e, r) for e, r, _ in first] == [
        ("ana@demo.bank", "agent"),
        ("admin@demo.bank", "admin"),
    ]
    second = demo_people(settings)
    with engine.begin() as conn:
        assert len(users.list_users(conn)) == 2
        for (email, _, old), (_, _, new) in zip(first, second, strict=True):
            assert old != new
            assert users.authenticate(conn, email, old) is None
            who = users.authenticate(conn, email, new)
            assert who is not None
        assert who.role == "admin"
