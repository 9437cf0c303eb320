"""Training examples and the outcome model: the features training records are the ones the
live pipeline computes, labels cannot leak, the split is by time, the card tells the truth.

A small history is made by ingesting simulated traffic through the real ``Ingestor`` on a
SQLite file, with the pipeline's scorer hook recording the feature vector after every
event; ``build_examples`` then replays the stored visits and must produce the very same
vectors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sqlalchemy import Engine
from sqlalchemy import event as sa_event

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.core.rules import Ruleset
from opportune.core.session import session_id_for
from opportune.engine.enrichment import GeoResolver
from opportune.engine.ingest import Ingestor
from opportune.engine.rules import RuleBook
from opportune.ml.booster import PackedRow
from opportune.ml.calibration import ece, reliability
from opportune.ml.outcomes.examples import Examples, build_examples
from opportune.ml.outcomes.features import FeatureSpec, spec_for, vector
from opportune.ml.outcomes.model import (
    TrainingConfig,
    TrainingError,
    _binned,
    _rows_of,
    headline,
    split_by_time,
    train_outcome_model,
)
from opportune.ml.outcomes.registry import ModelRegistry
from opportune.settings import Settings
from opportune.sim.web import SimSession, generate, to_batches
from opportune.sim.web_history import SimHistory, build_sim_examples
from opportune.store.db import make_engine, migrate
from opportune.store.visits import StoredVisits
from opportune.store.writer import GroupCommitWriter
from opportune.workspace import load_workspace

DAY = 86_400_000
START = 1_760_000_000_000
LEAK = "leak-loan-submitted"
EXTRA = f"""
kind: segment
name: {LEAK}
description: Planted leak - true only once the visit has submitted its loan
condition:
  event: {{type: custom, name: loan_submitted}}
---
kind: segment
name: loan-form-visitors
description: Opened the loan form (customer scope, so it carries into later visits)
scope: customer
expiresAfterDays: 7
condition:
  event: {{type: page_view, url: "*/demo/apply.html*"}}
"""
CONFIG = TrainingConfig(num_threads=1, baselines=False)


def workspace_dir(folder: Path) -> Path:
    """The example workspace's site, pages, segments and outcomes, plus the test's own."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("sites.yaml", "pages.yaml", "segments.yaml", "outcomes.yaml"):
        shutil.copy(EXAMPLE_WORKSPACE / name, folder / name)
    (folder / "test.yaml").write_text(EXTRA, encoding="utf-8")
    return folder


@dataclass
class History:
    engine: Engine
    rules: RuleBook
    sessions: list[SimSession]
    live: dict[tuple[str, int], list[float]]  # (session id, prefix length) -> vector
    end_ms: int


def ingest(engine: Engine, rules: RuleBook, sessions: list[SimSession], spec: FeatureSpec):
    """Run ``sessions`` through the real ingestion; return the vectors its scorer hook saw."""
    live: dict[tuple[str, int], list[float]] = {}
    rs: Ruleset = rules.ruleset
    original = rs.step

    def step(journey: Any, event: Any, now: int, assignments: Any, scorer: Any = None) -> Any:
        def hook(j: Any, members: Any, t: int) -> None:
            live[(j.session_id, sum(j.counts.values()))] = vector(j, members, t, spec)
            if scorer is not None:
                scorer(j, members, t)

        return original(journey, event, now, assignments, hook)

    rs.step = step  # type: ignore[method-assign]
    writer = GroupCommitWriter(engine)
    ingestor = Ingestor(
        settings=Settings(database_url="sqlite://"),
        engine=engine,
        writer=writer,
        geo=GeoResolver(trust_headers=True, mmdb_path=None),
        rules=rules,
    )
    site = next(iter(load_workspace(EXAMPLE_WORKSPACE).sites.values()))

    async def run() -> None:
        window: list[Any] = []

        async def drain() -> None:
            results = await asyncio.gather(
                *[
                    ingestor.ingest(
                        sb.batch,
                        site,
                        now_ms=sb.received_ms,
                        headers={"user-agent": sb.user_agent},
                        peer=None,
                    )
                    for sb in window
                ]
            )
            assert all(not r.refused for r in results)
            window.clear()

        # Concurrent requests, but one batch per visitor at a time, as the snippet sends
        # them (two batches of a brand-new visitor in flight would each start a state).
        visitors: set[str] = set()
        for sb in to_batches(sessions):
            if sb.batch.visitor_id in visitors or len(window) >= 128:
                await drain()
                visitors.clear()
            window.append(sb)
            visitors.add(sb.batch.visitor_id)
        await drain()
        await writer.aclose()
        await ingestor.live.aclose()

    asyncio.run(run())
    rs.step = original  # type: ignore[method-assign]
    return live


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    tmp = tmp_path_factory.mktemp("history")
    engine = make_engine(f"sqlite:///{tmp / 'history.db'}")
    migrate(engine)
    # Durability is not what this tests: skip the fsync of every commit (5x faster).
    sa_event.listen(engine, "connect", _no_sync)
    engine.dispose()
    rules = RuleBook(load_workspace(workspace_dir(tmp / "workspace")), engine)
    sessions = list(generate(11, start_ms=START, days=4, visitors_per_day=200))
    live = ingest(engine, rules, sessions, spec_for(rules.ruleset))
    end = max(s.received_ms[-1] for s in sessions) + 3_600_000
    yield History(engine, rules, sessions, live, end)
    engine.dispose()


def _no_sync(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=OFF")
    cur.close()


@pytest.fixture(scope="module")
def sim_examples(tmp_path_factory: pytest.TempPathFactory) -> Examples:
    """A larger history straight from the simulator (the bench's path), for the model."""
    rules = RuleBook(load_workspace(workspace_dir(tmp_path_factory.mktemp("ws"))))
    sessions = generate(5, start_ms=START, days=10, visitors_per_day=300)
    return build_sim_examples(sessions, rules.ruleset, spec_for(rules.ruleset))


@pytest.fixture(scope="module")
def examples(history: History) -> Examples:
    return build_examples(
        StoredVisits(history.engine),
        history.rules.ruleset,
        spec_for(history.rules.ruleset),
        since_ms=START - DAY,
        until_ms=history.end_ms,
    )


def test_training_features_equal_what_the_live_pipeline_computed(
    history: History, examples: Examples
) -> None:
    assert len(examples.visit_ids) == len(history.sessions)
    assert len(examples) == len(history.live) == sum(len(s.events) for s in history.sessions)
    names = examples.spec.names
    col = {n: i for i, n in enumerate(names)}
    differ = []
    for row, v, k in zip(examples.X, examples.visit, examples.prefix, strict=True):
        want = history.live[(examples.visit_ids[v], int(k))]
        if row.tolist() != want:
            differ.append([names[i] for i in np.flatnonzero(row != np.array(want))])
    assert differ == []
    # The history exercises what a replay could get wrong: returning visitors, visitors
    # identified in an earlier visit, outcomes of earlier visits, carried assignments.
    X = examples.X
    first = examples.prefix == 1
    assert (X[first, col["visit_number"]] > 1).sum() > 50
    assert (X[first, col["days_since_last_visit"]] > 0).sum() > 50
    assert (X[first, col["identified"]] == 1).sum() > 5
    assert (X[first, col["identified"]] == 0).sum() > 500
    assert (X[first][:, [col[f"past:{o}"] for o in examples.spec.outcomes]] > 0).any()
    assert (X[first, col["segment:loan-form-visitors"]] == 1).sum() > 5


def test_the_simulator_path_replays_exactly_as_the_stored_visits(
    history: History, examples: Examples
) -> None:
    rs = history.rules.ruleset
    sim = build_sim_examples(history.sessions, rs, spec_for(rs))
    # The same visits, prefixes, features and achievements. Their order may differ where
    # two visitors' visits start within the batching delay of each other: the simulator
    # lists them by first event, the store by the server's start of each; a visit only
    # depends on its own visitor's and customer's earlier visits, which keep their order.
    assert sorted(sim.visit_ids) == sorted(examples.visit_ids)
    assert _by_key(sim) == _by_key(examples)


def _by_key(ex: Examples) -> dict[tuple[str, int], tuple[list[float], tuple[int, ...]]]:
    achieved = [tuple(int(ex.achieved[o][v]) for o in sorted(ex.achieved)) for v in ex.visit]
    return {
        (ex.visit_ids[v], int(k)): (row.tolist(), a)
        for row, v, k, a in zip(ex.X, ex.visit, ex.prefix, achieved, strict=True)
    }


def test_two_workers_replay_exactly_what_one_does(history: History, examples: Examples) -> None:
    rs = history.rules.ruleset
    spec = spec_for(rs)
    two = build_examples(
        StoredVisits(history.engine),
        rs,
        spec,
        since_ms=START - DAY,
        until_ms=history.end_ms,
        workers=2,
    )
    assert sorted(two.visit_ids) == sorted(examples.visit_ids)
    assert _by_key(two) == _by_key(examples)
    sim_two = build_sim_examples(history.sessions, rs, spec, workers=2)
    assert _by_key(sim_two) == _by_key(examples)


def test_labels_say_achieved_later_and_no_prefix_after_the_achievement_is_kept(
    history: History, examples: Examples
) -> None:
    truth = {s_id: s for s_id, s in zip(examples.visit_ids, history.sessions, strict=True)}
    loan = examples.for_outcome("loan_submitted")
    achieved = examples.achieved["loan_submitted"]
    assert (achieved >= 0).sum() > 30
    for v in np.unique(loan.visit)[:400]:
        rows = loan.visit == v
        at = achieved[v]
        s = truth[examples.visit_ids[v]]
        # The replay found the achievement where the simulator made it.
        assert at == s.achieved_at.get("loan_submitted", -1)
        if at >= 0:
            assert loan.prefix[rows].max() == at  # prefixes 1..at: events before the one
        assert np.all(loan.y[rows] == (at >= 0))
        assert loan.weight[rows].sum() == pytest.approx(1.0)


def test_a_leaking_feature_carries_no_signal(history: History, examples: Examples) -> None:
    """A segment that holds once the loan is submitted would predict it perfectly if a
    prefix after the achievement were kept (or labelled by the visit). It must be zero in
    every example, and the model must never split on it."""
    leak = examples.spec.names.index(f"segment:{LEAK}")
    assert examples.X[:, leak].sum() > 100  # the planted leak fires, after achievements
    loan = examples.for_outcome("loan_submitted")
    assert loan.X[:, leak].max() == 0
    model = train_outcome_model(loan, CONFIG)
    gain = model.booster.feature_importance("gain")
    assert gain[leak] == 0
    # Had the builder kept every prefix and labelled it by the visit, the planted segment
    # would be a perfect predictor wherever it fires: this is the leak the test guards.
    at = examples.achieved["loan_submitted"][examples.visit]
    visit_label = (at >= 0).astype(float)
    fires = examples.X[:, leak] == 1
    assert visit_label[fires].min() == 1.0
    assert roc_auc_score(visit_label, examples.X[:, leak]) > 0.55


def test_the_split_is_by_visit_and_time(sim_examples: Examples) -> None:
    loan = sim_examples.for_outcome("loan_submitted")
    parts = split_by_time(loan)
    order = ["train", "validation", "calibration", "test"]
    for a, b in itertools.pairwise(order):
        assert parts[a].started.max() <= parts[b].started.min()
        assert not set(parts[a].visit.tolist()) & set(parts[b].visit.tolist())
    assert sum(len(p) for p in parts.values()) == len(loan)
    visits = {k: p.visits for k, p in parts.items()}
    assert visits["train"] == pytest.approx(0.6 * loan.visits, abs=2)
    assert visits["test"] == pytest.approx(0.2 * loan.visits, abs=2)


def test_the_card_reports_the_test_figures(sim_examples: Examples) -> None:
    loan = sim_examples.for_outcome("loan_submitted")
    model = train_outcome_model(loan, TrainingConfig(num_threads=1), now_ms=START + 7 * DAY)
    card = model.card
    test = split_by_time(loan)["test"]
    assert card["data"]["visits"] == loan.visits
    assert card["data"]["examples"] == len(loan)
    assert card["data"]["positives"] == int(loan.y.sum())
    assert card["data"]["splits"]["test"]["examples"] == len(test)
    assert card["trainedAtMs"] == START + 7 * DAY
    t = card["test"]
    assert 0.6 < t["rocAuc"] <= 1.0
    assert t["ece"] == pytest.approx(ece(model.test_p, test.y))
    assert t["reliability"] == reliability(model.test_p, test.y)
    assert sum(b["count"] for b in t["reliability"]) == len(test)
    assert [d["decile"] for d in t["liftByDecile"]] == list(range(1, 11))
    assert t["liftByDecile"][0]["lift"] > 1.5 > t["liftByDecile"][-1]["lift"]
    assert t["liftByDecile"][-1]["cumulativeCapture"] == pytest.approx(1.0)
    assert set(t["aucByPrefix"]) == {"1", "3", "5", "10"}
    base = card["baselines"]["baseRate"]
    # On this history the last two days are harder than the rest (AUC 0.83 on the
    # calibration slice, 0.67 here): the trees still beat the base rate's Brier score.
    trees = card["baselines"].get("gradientBoostedTrees", t)
    assert base["rocAuc"] == 0.5 and base["brier"] > trees["brier"]
    assert 0.5 < card["baselines"]["logisticRegression"]["rocAuc"] < 1.0
    assert card["calibration"]["method"] in ("isotonic", "platt")
    ref = card["referenceMax"]
    assert ref == sorted(ref) and len(ref) == card["referenceVisits"] == test.visits
    # Each test visit's maximum probability over its scored prefixes.
    maxima = sorted(
        float(model.test_p[test.visit == v].max()) for v in np.unique(test.visit).tolist()
    )
    assert ref == pytest.approx(maxima)
    assert card["features"] == loan.spec.names
    # The choice is made on the calibration slice, never the test slice it reports: the
    # model served is the candidate that ranked it best.
    chosen = card["selection"]
    assert chosen["slice"] == "calibration" and len(chosen["candidates"]) >= 3
    best = max(chosen["candidates"], key=lambda c: c["rocAuc"])
    served = "logisticRegression" if best["params"].get("model") else "gradientBoostedTrees"
    assert chosen["served"] == served
    assert set(chosen["droppedFeatures"]) <= set(loan.spec.names)
    newest = t["latest"]
    assert 0 < newest["visits"] <= test.visits // 4 + 1 and newest["from"] is not None
    assert 0 <= newest["ece"] < 1


def test_trees_worse_than_the_logistic_regression_are_not_served(
    sim_examples: Examples, tmp_path: Path
) -> None:
    """Trees that cannot split score every visit alike (AUC 0.5): the logistic regression
    ranks held-out visits better, so it is the model saved and served, with its own figures
    on the card and the trees' beside them (issue 19, item 5)."""
    loan = sim_examples.for_outcome("loan_submitted")
    blind = TrainingConfig(num_threads=1, max_rounds=3, min_data_in_leaf=10**9)
    model = train_outcome_model(loan, blind, now_ms=START + 7 * DAY)
    card = model.card
    assert model.linear is not None and card["model"]["kind"] == "logisticRegression"
    assert card["selection"]["served"] == "logisticRegression"
    assert card["selection"]["why"].startswith("the logistic regression ranked")
    assert card["test"]["rocAuc"] == card["baselines"]["logisticRegression"]["rocAuc"] > 0.6
    assert card["baselines"]["gradientBoostedTrees"]["rocAuc"] == 0.5
    assert "weight" in card["topFeatures"][0]
    # What the registry serves is what was evaluated: the same probabilities, row by row.
    registry = ModelRegistry(tmp_path)
    version = registry.save("loan_submitted", model)
    served = registry.load("loan_submitted", version)
    test = split_by_time(loan)["test"]
    rows = test.X[:50]
    assert served.predict_many(rows) == pytest.approx(model.test_p[:50])
    assert served.predict_one(PackedRow(rows[0].tolist())) == pytest.approx(model.test_p[0])
    why = served.contributions(rows[0].tolist(), top=3)
    assert len(why) == 3 and all(name in loan.spec.names for name, _ in why)
    assert "a logistic regression" in headline(card)


def test_every_outcome_trains_from_one_binning_of_the_replay(sim_examples: Examples) -> None:
    """The outcomes share the feature matrix, so LightGBM bins it once; each slice is its
    rows of that binning, with the outcome's own labels and weights."""
    ex = dataclasses.replace(sim_examples, derived={})
    loan, demo = ex.for_outcome("loan_submitted"), ex.for_outcome("demo_booked")
    train_outcome_model(loan, CONFIG)
    train_outcome_model(demo, CONFIG)
    assert len(ex.derived) == 1
    binned = _binned(loan, CONFIG)
    assert binned.num_data() == len(ex)
    for outcome in (loan, demo):
        for part in split_by_time(outcome).values():
            rows = _rows_of(binned, part)
            assert rows.num_data() == len(part)
            assert np.array_equal(rows.get_label(), part.y.astype(np.float32))
            assert np.allclose(rows.get_weight(), part.weight, rtol=1e-6)
    assert len(ex.derived) == 1
    # Rows a slice leaves out are not in its LightGBM rows: the visits that achieved the
    # outcome earlier stop at the event before (no prefix after an achievement).
    assert len(loan) < len(ex) and len(demo) < len(ex)


def test_the_bins_come_from_the_training_period_only(sim_examples: Examples) -> None:
    """A feature seen as 0/1 in the oldest visits and as 300 distinct values in the test
    visits gets the training period's two bins: the visits the card's figures are computed
    on do not shape the model."""
    parts = split_by_time(sim_examples.for_outcome("loan_submitted"))
    col = sim_examples.spec.names.index("scroll_depth")
    X = sim_examples.X.copy()
    old = np.isin(sim_examples.visit, parts["train"].visit)
    X[old, col] = np.arange(old.sum()) % 2
    new = np.isin(sim_examples.visit, parts["test"].visit)
    X[new, col] = np.random.default_rng(0).integers(2, 302, new.sum())
    ex = dataclasses.replace(sim_examples, matrices=[X], derived={})
    loan = ex.for_outcome("loan_submitted")
    assert _binned(loan, CONFIG).feature_num_bin(col) <= 3
    # With a training period reaching into those visits, their values make bins.
    longer = dataclasses.replace(CONFIG, shares=(0.9, 0.04, 0.03, 0.03))
    assert _binned(loan, longer).feature_num_bin(col) > 50


def test_a_worker_without_visits_replays_nothing(tmp_path: Path) -> None:
    rules = RuleBook(load_workspace(workspace_dir(tmp_path)))
    one = list(generate(2, start_ms=START, days=1, visitors_per_day=1))[:1]
    spec = spec_for(rules.ruleset)
    alone = build_sim_examples(one, rules.ruleset, spec)
    two = build_sim_examples(one, rules.ruleset, spec, workers=2)
    assert two.visit_ids == alone.visit_ids
    assert np.array_equal(two.X, alone.X) and len(two) == len(one[0].events)


def test_a_slice_without_achievements_is_refused_clearly(sim_examples: Examples) -> None:
    rare = sim_examples.for_outcome("demo_booked")
    rare.y = np.zeros(len(rare))
    with pytest.raises(TrainingError, match="no achievement"):
        train_outcome_model(rare, CONFIG)


def test_sim_history_carries_the_visitor_between_visits(tmp_path: Path) -> None:
    """A returning visitor's next visit starts where the live state left it."""
    sessions = list(generate(3, start_ms=START, days=3, visitors_per_day=200))
    hist = SimHistory(keep_truth=True)
    rules = RuleBook(load_workspace(workspace_dir(tmp_path)))
    ex = build_sim_examples(sessions, rules.ruleset, spec_for(rules.ruleset), history=hist)
    assert set(hist.truth) == set(ex.visit_ids)
    by_visitor: dict[str, list[SimSession]] = {}
    for s in sessions:
        by_visitor.setdefault(s.visitor_id, []).append(s)
    back = [v for v in by_visitor.values() if len(v) > 1]
    assert back
    col = ex.spec.names.index("days_since_last_visit")
    for visits in back[:20]:
        a, b = visits[0], visits[1]
        idx = ex.visit_ids.index(session_id_for(b.visitor_id, b.visit_number))
        row = ex.X[(ex.visit == idx) & (ex.prefix == 1)][0]
        end_a = max(_server_ts(a))
        start_b = _server_ts(b)[0]
        assert row[col] == pytest.approx((start_b - end_a) / DAY)
        assert row[ex.spec.names.index("visit_number")] == b.visit_number


def _server_ts(s: SimSession) -> list[int]:
    """The events' times on the server clock (the skew correction of ingestion)."""
    return [
        e.ts + r - b.sent_at
        for b, r in zip(s.batches, s.received_ms, strict=True)
        for e in b.events
    ]
