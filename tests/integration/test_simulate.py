"""The web simulator through the real ingestion: a backfill by CLI, and live over HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select

from opportune.cli import main
from opportune.sim.live import send_live
from opportune.store.schema import events, sessions


def test_backfill_stores_every_simulated_event(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "simulate",
            "web",
            "--days",
            "2",
            "--visitors-per-day",
            "60",
            "--seed",
            "3",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    accepted = int(result.output.split("backfilled ")[1].split()[0])
    assert "refused 0" in result.output
    eng = create_engine(f"sqlite:///{tmp_path / 'opportune.db'}")
    with eng.connect() as c:
        assert c.execute(select(func.count()).select_from(events)).scalar() == accepted > 500
        n_sessions = c.execute(select(func.count()).select_from(sessions)).scalar()
    eng.dispose()
    assert 100 <= n_sessions <= 130  # 120 simulated visits; a few split by long pauses


def test_bad_options_are_refused(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["simulate", "web", "--days", "0", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "--days" in r.output


def test_live_traffic_reaches_a_running_server(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "site.yaml").write_text(
        f"kind: site\nname: demo\nkey: demo-site-key\norigins: ['{base}']\n"
    )
    with (tmp_path / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "opportune.cli",
                "serve",
                "--port",
                str(port),
                "--workspace",
                str(ws),
                "--data-dir",
                str(tmp_path / "data"),
                "--api-key",
                "k",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, (
                tmp_path / "server.log"
            ).read_text()
            time.sleep(0.2)
        stats = asyncio.run(
            send_live(base, seed=5, rate=5, duration_s=1, time_scale=600, origin=base)
        )
        assert stats.events > 20
        assert set(stats.statuses) == {200} and stats.errors == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_demo_puts_agents_on_its_chat_queues(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine, select

    from opportune.cli.demo import demo_agents
    from opportune.settings import Settings
    from opportune.store.schema import agent_state, queue_presence

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    demo_agents(Settings(database_url=url, data_dir=tmp_path), 3)
    demo_agents(Settings(database_url=url, data_dir=tmp_path), 2)  # again: replaced, not added
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            q = select(queue_presence.c.queue, queue_presence.c.agents_available)
            queues = {name: n for name, n in c.execute(q)}
            agents = dict(c.execute(select(agent_state.c.agent_id, agent_state.c.presence)).all())
    finally:
        eng.dispose()
    assert queues == {"loans": 2, "support": 2}
    # Only the agent the demo signs in as takes chats: nobody else could answer them.
    assert agents == {"ana": "available", "ben": "offline", "carla": "offline", "dev": "offline"}
