"""The server's scheduled retraining: the command lines its child processes run."""

from __future__ import annotations

from pathlib import Path

from opportune.engine.retraining import routing_train_command, train_command
from opportune.settings import Settings


def test_the_scheduled_command_is_the_cli_with_the_servers_settings(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, database_url="sqlite:///x.db", workspace=tmp_path)
    cmd = train_command(s, ["loan_submitted", "quote_requested"], 30)
    i = cmd.index("-m")
    assert cmd[i + 1 : i + 3] == ["opportune.cli", "train"]
    tail = " ".join(cmd[i + 3 :])
    assert f"--data-dir {tmp_path}" in tail and "--database-url sqlite:///x.db" in tail
    assert "--outcome loan_submitted --outcome quote_requested" in tail
    assert "--days 30" in tail


def test_the_routing_command_forces_what_the_loop_found_ready(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, database_url="sqlite:///x.db", workspace=tmp_path)
    cmd = routing_train_command(s, ["sales", "support"], 90)
    i = cmd.index("-m")
    assert cmd[i + 1 : i + 4] == ["opportune.cli", "train", "routing"]
    tail = " ".join(cmd[i + 4 :])
    assert "--days 90 --force" in tail and f"--data-dir {tmp_path}" in tail
    assert "--queue sales --queue support" in tail
