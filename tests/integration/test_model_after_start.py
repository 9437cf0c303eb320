"""A server started before any model exists serves the first one trained and activated
afterwards, picked up by its own refresh loop (no restart, no call into the process)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.engine.rules import RuleBook
from opportune.ml.outcomes.features import spec_for
from opportune.ml.outcomes.model import TrainingConfig, train_outcome_model
from opportune.ml.outcomes.registry import ModelRegistry
from opportune.settings import Settings
from opportune.sim.web import generate
from opportune.sim.web_history import build_sim_examples
from opportune.workspace import load_workspace

ORIGIN = "http://127.0.0.1:8000"
LOAN = "loan_submitted"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """The example workspace with only ``loan_submitted`` scored (one model to train)."""
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    docs = [d for d in yaml.safe_load_all((ws / "outcomes.yaml").read_text()) if d]
    for d in docs:
        d["scoring"] = {"enabled": d["name"] == LOAN}
    (ws / "outcomes.yaml").write_text(yaml.safe_dump_all(docs))
    return ws


def _page(client: TestClient, vid: str, n: int) -> dict[str, object]:
    t = int(time.time() * 1000)
    body = {
        "siteKey": "demo-site-key",
        "visitorId": vid,
        "sentAt": t,
        "events": [{"id": f"{vid}-{n}", "ts": t, "type": "page_view", "url": ORIGIN + "/demo/"}],
    }
    r = client.post("/v1/events", json=body, headers={"origin": ORIGIN})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_model_activated_after_start_is_served(workspace: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        workspace=workspace,
        data_dir=data,
        api_key="k",
        retrain_interval_h=0,
        rules_poll_s=0.05,
    )
    with TestClient(create_app(settings)) as client:
        assert not _page(client, "before", 0).get("scores")
        # Trained and activated beside the running server, as `opportune train` does.
        rules = RuleBook(load_workspace(workspace))
        sessions = generate(5, start_ms=1_750_000_000_000, days=4, visitors_per_day=200)
        examples = build_sim_examples(sessions, rules.ruleset, spec_for(rules.ruleset))
        model = train_outcome_model(
            examples.for_outcome(LOAN), TrainingConfig(num_threads=1, baselines=False)
        )
        registry = ModelRegistry(data / "models")
        registry.activate(LOAN, registry.save(LOAN, model), by="test")
        # The server's poll (every 50 ms here) must pick it up; give a loaded machine time.
        deadline = time.monotonic() + 60
        n = 0
        while time.monotonic() < deadline:
            n += 1
            scores = _page(client, f"after{n}", 0).get("scores") or {}
            if LOAN in scores:
                break
            time.sleep(0.1)
        assert LOAN in scores, "the model activated after start was never served"
        assert 0 < scores[LOAN]["probability"] < 1
