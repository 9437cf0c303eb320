"""The KPI model: it beats the base rate, ranks agents like the truth, shrinks agents with
little history toward the mean, scores candidates in one call, and its card reports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from opportune.ml.routing.model import RoutingModel, TrainingSet
from opportune.sim.center import Center, CenterConfig
from opportune.sim.contact_center import Policy, simulate, training_set

CONFIG = CenterConfig(agents=16, calls_per_day=1500.0)


@pytest.fixture(scope="module")
def center() -> Center:
    return Center(CONFIG, seed=21)


@pytest.fixture(scope="module")
def history(center: Center) -> TrainingSet:
    stream = center.arrivals(days=12, seed=21)
    return training_set(simulate(center, stream, Policy("li", "standard", center.queue())), center)


@pytest.fixture(scope="module")
def model(center: Center, history: TrainingSet) -> RoutingModel:
    return RoutingModel.fit(history, agent_features=center.agent_features())


def test_the_model_beats_the_base_rate_and_is_calibrated(model: RoutingModel) -> None:
    h = model.card["holdout"]
    assert h["log_loss"] < h["base_rate_log_loss"] - 0.005
    assert h["brier"] < h["base_rate_brier"]
    assert h["auc"] > 0.6
    assert h["ece"] < 0.03
    assert model.card["rows_train"] + model.card["rows_holdout"] > 10_000


def test_it_ranks_agents_like_the_truth(center: Center, model: RoutingModel) -> None:
    rng = np.random.default_rng(5)
    corr = []
    for _ in range(200):
        x = rng.normal(0, 1, 4)
        pred = model.predict(x, center.agent_ids, (0.0,), center.pair("en", center.agent_ids))
        corr.append(np.corrcoef(pred, center.true_p(x, "en"))[0, 1])
    assert np.mean(corr) > 0.6


def test_one_batched_call_scores_every_candidate_in_order(
    center: Center, model: RoutingModel, history: TrainingSet
) -> None:
    x = history.customer[0]
    ids = center.agent_ids
    pair = center.pair("es", ids)
    batch = model.predict(x, ids, (1.0,), pair)
    rows = TrainingSet(
        np.tile(x, (len(ids), 1)),
        np.ones((len(ids), 1)),
        np.array(ids, dtype=object),
        np.zeros(len(ids)),
        np.zeros(len(ids)),
        pair,
    )
    assert batch == pytest.approx(model.predict_rows(rows))
    assert model.predict(x, ids[::-1], (1.0,), pair[::-1]) == pytest.approx(batch[::-1])
    assert ((batch > 0) & (batch < 1)).all()
    unknown = model.predict(x, ["never-seen"], (1.0,), np.zeros((1, 1)))
    assert 0 < unknown[0] < 1
    with pytest.raises(ValueError, match="1 pair feature"):
        model.predict(x, ids, (1.0,))


def synthetic(seed: int, rookie_rows: int) -> TrainingSet:
    """Agents with known effects; one rookie who sold on every one of a few calls."""
    rng = np.random.default_rng(seed)
    effects = {f"v{k}": e for k, e in enumerate(np.linspace(-0.5, 0.5, 10))}
    agents = rng.choice(list(effects), 20_000).astype(object)
    x = rng.normal(0, 1, (len(agents), 2))
    eta = -1.5 + 0.5 * x[:, 0] + np.array([effects[a] for a in agents])
    y = (rng.random(len(agents)) < 1 / (1 + np.exp(-eta))).astype(float)
    agents = np.concatenate([agents, np.array(["rookie"] * rookie_rows, dtype=object)])
    x = np.vstack([x, rng.normal(0, 1, (rookie_rows, 2))])
    y = np.concatenate([y, np.ones(rookie_rows)])
    t = rng.permutation(len(y)).astype(np.int64)
    return TrainingSet(x, np.zeros((len(y), 0)), agents, y, t)


def test_shrinkage_pulls_agents_with_little_history_toward_the_mean() -> None:
    data = synthetic(1, rookie_rows=6)
    m = RoutingModel.fit(data)
    effects = m.agent_effects(data.take(np.arange(2000)))
    mean_rate = float(data.labels.mean())
    # The rookie's raw rate is 1.0, some 0.8 above the mean; the model moves them little,
    # while well-known agents keep effects of their true size (±0.5 on the logit: ≈ ±0.07).
    assert effects["rookie"] < 0.25 * (1.0 - mean_rate)
    assert effects["v9"] - effects["v0"] > 0.08
    ranks = np.argsort(np.argsort([effects[f"v{k}"] for k in range(10)]))
    assert np.corrcoef(ranks, np.arange(10))[0, 1] > 0.9
    posteriors = m.posteriors()
    assert posteriors["rookie"].b > 2 * posteriors["v5"].b  # explore the uncertain one
    # With more of the same evidence, the rookie's estimate moves away from the mean.
    more = RoutingModel.fit(synthetic(1, rookie_rows=60))
    assert more.agent_effects(data.take(np.arange(2000)))["rookie"] > effects["rookie"]


def test_the_card_reports_by_history_size_and_the_spread_of_agent_effects(
    model: RoutingModel,
) -> None:
    card = model.card
    assert [g["history"] for g in card["by_history"]] == ["<100", "100-999", "≥1000"]
    assert sum(g["agents"] for g in card["by_history"]) == 16
    assert all(math.isnan(g["auc"]) or 0.5 < g["auc"] < 1 for g in card["by_history"])
    spread = card["agent_effects"]
    assert spread["p10"] < 0 < spread["p90"] and spread["sd"] > 0.005
    assert set(card["penalty"]) == {"intercept", "slopes"}


def test_the_hierarchical_agent_model_ranks_agents_better_than_target_encoding(
    center: Center, history: TrainingSet, model: RoutingModel
) -> None:
    """What routing uses is the ranking of agents for one customer: measured against the
    truth, the per-agent model with its own shrinkage beats agent-as-a-category trees."""
    te = RoutingModel.fit(
        history, agent_features=center.agent_features(), agent_model="target_encoding"
    )
    rng = np.random.default_rng(6)
    gap = []
    for _ in range(200):
        x = rng.normal(0, 1, 4)
        truth = center.true_p(x, "en")
        ridge = np.corrcoef(
            model.predict(x, center.agent_ids, (0.0,), center.pair("en", center.agent_ids)), truth
        )[0, 1]
        trees = np.corrcoef(
            te.predict(x, center.agent_ids, (0.0,), center.pair("en", center.agent_ids)), truth
        )[0, 1]
        gap.append(ridge - trees)
    assert np.mean(gap) > 0.05
    # Held-out log loss is dominated by the customer part: about equal for both.
    assert model.card["holdout"]["log_loss"] == pytest.approx(
        te.card["holdout"]["log_loss"], abs=0.003
    )


def test_amounts_are_modelled_too(center: Center, history: TrainingSet) -> None:
    """Handle time: each agent's speed is learnt, so the model beats the mean."""
    stream = center.arrivals(days=4, seed=3)
    result = simulate(center, stream, Policy("li", "standard", center.queue()))
    rows = [r for r in result.records if r.agent_id is not None]
    data = TrainingSet(
        np.array([r.x for r in rows]),
        np.zeros((len(rows), 0)),
        np.array([r.agent_id for r in rows], dtype=object),
        np.array([r.handle_s for r in rows]),
        np.array([r.arrived_ms for r in rows]),
    )
    m = RoutingModel.fit(data, binary=False)
    h = m.card["holdout"]
    assert h["rmse"] < h["base_rmse"]
    speeds = {a.id: a.speed for a in center.agents}
    ref = data.take(np.arange(300))
    fx = m.agent_effects(ref)
    assert np.corrcoef([fx[a] for a in speeds], list(speeds.values()))[0, 1] > 0.7
