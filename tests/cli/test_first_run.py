"""A fresh clone's first commands, run as a newcomer runs them (a real process, started in
a folder of its own): ``python -m opportune`` works, and the server says where it writes,
as an absolute folder, honouring ``--data-dir`` and ``OPPORTUNE_DATA_DIR``, and writes
nothing into the folder it was started from."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPPORTUNE_")}
    if env.get("PYTHONPATH"):  # the commands start in another folder: keep it meaning the same
        paths = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).absolute()) for p in paths if p)
    return {**env, "OPPORTUNE_RETRAIN_INTERVAL_H": "0", **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def opportune(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opportune", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """An empty folder to start commands from."""
    d = tmp_path / "here"
    d.mkdir()
    return d


def test_python_dash_m_opportune_is_the_command_line(here: Path) -> None:
    version = opportune("--version", cwd=here)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("opportune, version ")
    usage = opportune("--help", cwd=here)
    assert usage.returncode == 0 and "Usage: opportune " in usage.stdout
    assert all(c in usage.stdout for c in ("serve", "demo", "train", "models"))


def _serve(here: Path, *args: str, **env: str) -> Iterator[str]:
    """``opportune serve`` started in ``here``; yields its first lines once it answers."""
    port = _free_port()
    log = here.parent / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opportune", "serve", "--port", str(port), *args],
            cwd=here,
            env=_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 90  # a loaded 2-core machine starts slowly
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_says_where_the_environment_puts_the_data(here: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    for printed in _serve(here, OPPORTUNE_DATA_DIR=str(elsewhere)):
        assert f"Data in {elsewhere}: the SQLite file opportune.db" in printed, printed
    assert (elsewhere / "opportune.db").is_file()
    assert list(here.iterdir()) == []


def test_a_relative_data_dir_is_printed_resolved(here: Path) -> None:
    for printed in _serve(here, "--data-dir", "store"):
        assert f"Data in {here / 'store'}: " in printed, printed
    assert (here / "store" / "opportune.db").is_file()
    assert [p.name for p in here.iterdir()] == ["store"]


def test_the_other_commands_use_the_same_folder(here: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    migrated = opportune("migrate", cwd=here, OPPORTUNE_DATA_DIR=str(elsewhere))
    assert migrated.returncode == 0, migrated.stderr
    assert (elsewhere / "opportune.db").is_file()
    listed = opportune("models", "list", "--data-dir", str(elsewhere), cwd=here)
    assert listed.stderr.startswith(f"error: no models under {elsewhere / 'models'} yet")
    listed = opportune("models", "list", cwd=here, OPPORTUNE_DATA_DIR="rel")
    assert listed.stderr.startswith(f"error: no models under {here / 'rel' / 'models'} yet")
    assert list(here.iterdir()) == []
