"""Outcome scores through the server: a model trained with the project's own training code,
activated in the registry, is scored on every event of a visit and explained."""

from __future__ import annotations

import functools
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.engine.context import conversation_context
from opportune.engine.rules import RuleBook
from opportune.ml.outcomes.features import spec_for
from opportune.ml.outcomes.model import TrainingConfig, train_outcome_model
from opportune.ml.outcomes.registry import ModelRegistry
from opportune.settings import Settings
from opportune.sim.web import generate
from opportune.sim.web_history import build_sim_examples
from opportune.store import conversations as conv_store
from opportune.workspace import load_workspace

KEY = {"X-API-Key": "k"}
ORIGIN = "http://127.0.0.1:8000"
APPLY = f"{ORIGIN}/demo/apply.html"


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A workspace with loan_submitted scored, and a data folder holding its model."""
    root = tmp_path_factory.mktemp("scored")
    ws = root / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    docs = list(yaml.safe_load_all((ws / "outcomes.yaml").read_text()))
    for d in docs:
        if d and d["name"] == "loan_submitted":
            d["scoring"] = {"enabled": True}
    (ws / "outcomes.yaml").write_text(yaml.safe_dump_all(docs))
    rules = RuleBook(load_workspace(ws))
    spec = spec_for(rules.ruleset)
    sessions = generate(3, start_ms=1_750_000_000_000, days=8, visitors_per_day=250)
    ex = build_sim_examples(sessions, rules.ruleset, spec)
    model = train_outcome_model(
        ex.for_outcome("loan_submitted"), TrainingConfig(num_threads=1, baselines=False)
    )
    registry = ModelRegistry(root / "data" / "models")
    registry.activate("loan_submitted", registry.save("loan_submitted", model), by="test")
    return ws, root / "data"


@pytest.fixture
def client(scored: tuple[Path, Path], tmp_path: Path) -> Iterator[TestClient]:
    ws, data = scored
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        workspace=ws,
        data_dir=data,
        api_key="k",
        retrain_interval_h=0,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def send(client: TestClient, vid: str, n: int, *events: dict[str, Any]) -> dict[str, Any]:
    t = int(time.time() * 1000)
    body = {
        "siteKey": "demo-site-key",
        "visitorId": vid,
        "sentAt": t,
        "events": [{"id": f"{vid}-{n}-{i}", "ts": t, **e} for i, e in enumerate(events)],
    }
    r = client.post("/v1/events", json=body, headers={"origin": ORIGIN})
    assert r.status_code == 200, r.text
    return r.json()


def test_every_event_is_scored_and_the_score_is_explained(client: TestClient) -> None:
    first = send(client, "sc1", 0, {"type": "page_view", "url": f"{ORIGIN}/demo/index.html"})
    s0 = first["scores"]["loan_submitted"]
    assert 0 < s0["probability"] < 1 and 0 <= s0["quantile"] <= 1
    assert s0["maxProbability"] == s0["probability"]
    later = send(
        client,
        "sc1",
        1,
        {"type": "page_view", "url": f"{ORIGIN}/demo/product.html"},
        {"type": "page_view", "url": APPLY},
    )["scores"]["loan_submitted"]
    assert later["probability"] != s0["probability"]  # it moves with the journey
    # Served at full precision, not rounded into labels (issue 19 #4).
    assert any(round(p, 4) != p for p in (s0["probability"], later["probability"]))
    assert later["maxProbability"] == max(later["probability"], s0["probability"])
    view = client.get("/v1/visitors/sc1/live", headers=KEY).json()
    [score] = view["scores"]
    assert score["outcome"] == "loan_submitted" and score["probability"] == pytest.approx(
        later["probability"], abs=1e-4
    )
    assert len(score["why"]) == 5 and all(
        "feature" in w and "contribution" in w for w in score["why"]
    )
    # Each feature also said in words a person understands (issue 19 #8), never "word:31".
    texts = [w["text"] for w in score["why"]]
    assert all(t and not re.search(r"[a-z]:\w|_", t) for t in texts), texts
    # Once achieved, the outcome is no longer scored: its score stops where it was.
    done = send(
        client,
        "sc1",
        2,
        {"type": "custom", "name": "loan_submitted", "attributes": {"amount": 5000}},
    )
    assert done["outcomes"] == ["loan_submitted"]
    after = send(client, "sc1", 3, {"type": "page_view", "url": f"{ORIGIN}/demo/confirmation.html"})
    assert after["scores"]["loan_submitted"] == done["scores"]["loan_submitted"]


def test_the_agents_context_panel_says_why_in_words(client: TestClient) -> None:
    """The context panel's scores: the same model, each reason in words, the visit's own
    search quoted when a word of it weighs in the score."""
    send(
        client,
        "sc2",
        0,
        {"type": "page_view", "url": f"{ORIGIN}/demo/index.html"},
        {"type": "search", "query": "personal loan"},
        {"type": "page_view", "url": f"{ORIGIN}/demo/product.html?q=loan"},
        {"type": "page_view", "url": APPLY},
    )
    rt = client.app.app.state.runtime  # type: ignore[attr-defined]
    now = int(time.time() * 1000)
    with rt.ingestor.engine.begin() as conn:
        conv_store.open_conversation(
            conn,
            conversation_id="cs2",
            site_id="demo",
            visitor_id="sc2",
            customer_id=None,
            state="queued",
            now_ms=now,
            queue="loans",
        )
    assert client.portal is not None
    ctx = client.portal.call(
        functools.partial(
            conversation_context, rt.ingestor, rt.rules, rt.workspace, "cs2", now_ms=now
        )
    )
    [score] = ctx["scores"]
    assert score["outcome"] == "loan_submitted" and 0 < score["probability"] < 1
    why = score["why"]
    assert why and all(w["text"] and not re.search(r"[a-z]:\w|_", w["text"]) for w in why)
    for w in why:  # a word bucket the visit used is said with the visit's words
        if w["feature"].startswith("word:") and w["value"] > 0:
            assert "'" in w["text"], w
