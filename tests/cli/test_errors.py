"""The errors a command meets in normal use end in one ``error: …`` line naming the fix,
never a traceback, and a non-zero exit: a port taken, a database locked, away or not a
database, a workspace that does not validate, no models yet. Each through the real
command line (``python -m opportune`` in a process of its own)."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from opportune.api.app import EXAMPLE_WORKSPACE


def opportune(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPPORTUNE_")}
    if env.get("PYTHONPATH"):  # started in another folder: keep the path meaning the same
        paths = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).absolute()) for p in paths if p)
    env["OPPORTUNE_RETRAIN_INTERVAL_H"] = "0"
    return subprocess.run(
        [sys.executable, "-m", "opportune", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def one_error(run: subprocess.CompletedProcess[str], *words: str) -> str:
    """The run failed with exactly one ``error:`` line holding ``words``; that line."""
    assert run.returncode != 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, run.stderr
    assert all(w in errors[0] for w in words), errors[0]
    return errors[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_port_in_use_is_said_before_any_work(
    command: str, listening: int, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    run = opportune(command, "--port", str(listening), "--data-dir", str(data), cwd=tmp_path)
    line = one_error(run, f"port {listening} on 127.0.0.1 is already in use", "--port ")
    suggested = int(line.split("--port ")[1].split()[0])
    assert suggested != listening
    assert "listening" not in run.stdout
    assert not data.exists()  # the demo did not backfill or train before failing


def test_a_locked_database_is_said_with_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert opportune("migrate", "--data-dir", str(data), cwd=tmp_path).returncode == 0
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # another process's long write, as a held write lock
        conn = sqlite3.connect(data / "opportune.db", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM events")
        holding.set()
        release.wait(120)
        conn.execute("ROLLBACK")
        conn.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        # The purge waits for the lock as long as every command does (30 s), then says so.
        run = opportune("gdpr", "purge", "--days", "1", "--data-dir", str(data), cwd=tmp_path)
    finally:
        release.set()
        holder.join()
    one_error(run, str(data / "opportune.db"), "is locked", "try again")


def test_a_database_that_is_away_or_not_a_database(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    url = f"postgresql://postgres:secret@127.0.0.1:{port}/nothing"
    run = opportune("migrate", "--database-url", url, cwd=tmp_path)
    line = one_error(run, "cannot connect to the database", f"127.0.0.1:{port}", "--database-url")
    assert "secret" not in line
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "opportune.db").write_text("not a database")
    run = opportune("migrate", "--data-dir", str(tmp_path / "odd"), cwd=tmp_path)
    one_error(run, "is not an SQLite database", "--data-dir")


@pytest.fixture
def bad_workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    for f in EXAMPLE_WORKSPACE.glob("*.yaml"):
        (ws / f.name).write_text(f.read_text())
    (ws / "extra.yaml").write_text("kind: outcome\nname: x\ncondition: {event: {type: pageview}}\n")
    (ws / "broken.yaml").write_text("a: [\n")
    return ws


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["demo", "--no-model", "--agents", "0"],
        ["train"],
        ["simulate", "web", "--days", "1", "--visitors-per-day", "50"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_a_workspace_that_does_not_validate_names_each_problem(
    command: list[str], bad_workspace: Path, tmp_path: Path
) -> None:
    args = [*command, "--workspace", str(bad_workspace), "--data-dir", str(tmp_path / "d")]
    if command[0] in ("serve", "demo"):
        args += ["--port", str(_free_port())]
    run = opportune(*args, cwd=tmp_path)
    assert run.returncode == 2
    one_error(run, "the workspace does not validate", "opportune config validate")
    assert "extra.yaml:3: condition.event.type: unknown event type 'pageview'" in run.stderr
    assert "broken.yaml:2: not valid YAML" in run.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["models", "list"],
        ["models", "list", "--outcome", "loan_submitted"],
        ["models", "activate", "loan_submitted", "v1"],
        ["models", "rollback", "loan_submitted"],
    ],
    ids=" ".join,
)
def test_no_models_yet_says_where_it_looked_and_how_to_make_one(
    command: list[str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    run = opportune(*command, "--data-dir", str(data), cwd=tmp_path)
    one_error(run, "no models", f"under {data / 'models'} yet", "opportune train", "--data-dir")


def test_training_with_no_history_says_what_to_do(tmp_path: Path) -> None:
    run = opportune("train", "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert "loan_submitted: not trained: collecting data: 0 of" in run.stdout
    one_error(run, "no model trained", "--force", "opportune simulate web")
    run = opportune("train", "routing", "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    one_error(run, "no routing model trained", "--force")
