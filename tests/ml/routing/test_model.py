"""The KPI model: it beats the base rate, ranks agents like the truth, shrinks agents with
little history toward the mean, scores candidates in one call, and its card reports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from opportune.ml.routing.model import RoutingModel, TrainingSet
from opportune.sim.center import SPECIALIST, Center, CenterConfig
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
    return RoutingModel.fit(history, agent_features=center.agent_features(), agent_model="ridge")


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
    m = RoutingModel.fit(data, agent_model="ridge")
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
    more = RoutingModel.fit(synthetic(1, rookie_rows=60), agent_model="ridge")
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
    assert set(card["penalty"]) == {"intercept", "slopes", "shape"}
    per_agent = card["per_agent"]
    assert len(per_agent) == 16 and sum(a["rows"] for a in per_agent) == card["rows_train"]
    assert all(0 < a["shrinkage"] <= 1 for a in per_agent)


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


def teams(seed: int, rookie_rows: int) -> tuple[TrainingSet, dict[str, tuple[float, ...]]]:
    """Two teams (an agent feature: their skill level); the strong team sells far more.
    One rookie of the strong team failed on each of a few calls."""
    rng = np.random.default_rng(seed)
    team = {f"s{k}": 1.0 for k in range(6)} | {f"w{k}": 0.0 for k in range(6)}
    agents = rng.choice(list(team), 20_000).astype(object)
    x = rng.normal(0, 1, (len(agents), 2))
    eta = -1.8 + 0.4 * x[:, 0] + 0.9 * np.array([team[a] for a in agents])
    y = (rng.random(len(agents)) < 1 / (1 + np.exp(-eta))).astype(float)
    agents = np.concatenate([agents, np.array(["rookie"] * rookie_rows, dtype=object)])
    x = np.vstack([x, rng.normal(0, 1, (rookie_rows, 2))])
    y = np.concatenate([y, np.zeros(rookie_rows)])
    t = rng.permutation(len(y)).astype(np.int64)
    features = {a: (v,) for a, v in team.items()} | {"rookie": (1.0,)}
    return TrainingSet(x, np.zeros((len(y), 0)), agents, y, t), features


def test_a_sparse_agent_is_pooled_toward_their_team_not_the_overall_mean() -> None:
    data, features = teams(3, rookie_rows=8)
    m = RoutingModel.fit(data, agent_features=features, agent_model="ridge")
    effects = m.agent_effects(data.take(np.arange(2000)))
    strong = np.mean([effects[f"s{k}"] for k in range(6)])
    weak = np.mean([effects[f"w{k}"] for k in range(6)])
    # Eight failures in a row moved the rookie little: still nearer their (strong) team
    # than the weak one, far above the overall mean.
    assert effects["rookie"] > (strong + weak) / 2
    card = {a["agent"]: a for a in m.card["per_agent"]}
    assert card["rookie"]["rows"] == 8 and card["s0"]["rows"] > 1000
    # Shrinkage: the share of an agent's own estimate pulled to the team (1: all of it).
    assert card["rookie"]["shrinkage"] > 0.9
    assert card["rookie"]["shrinkage"] > card["s0"]["shrinkage"] + 0.2


@pytest.fixture(scope="module")
def specialist() -> tuple[Center, TrainingSet]:
    center = Center(
        CenterConfig(agents=16, calls_per_day=1500.0, occupancy=0.7, truth=SPECIALIST), seed=4
    )
    stream = center.arrivals(days=12, seed=4)
    result = simulate(center, stream, Policy("li", "standard", center.queue()))
    return center, training_set(result, center)


def test_shape_terms_learn_sharp_strengths_slopes_cannot(
    specialist: tuple[Center, TrainingSet],
) -> None:
    """Agents strong at some intents (the intent is a numeric feature): per-agent slopes
    on it cannot say "good at 2 and 5, weak at 3"; the pooled shape terms can."""
    center, history = specialist
    features = center.agent_features()
    shaped = RoutingModel.fit(history, agent_features=features, agent_model="ridge")
    slopes = RoutingModel.fit(history, agent_features=features, agent_model="ridge", shape=False)
    assert [j for j, kind, _ in shaped.card["terms"]["shape"] if kind == "levels"] == [4]
    probe = center.arrivals(days=1, first_day=900, seed=5)[:300]
    ids = center.agent_ids

    def corr(m: RoutingModel) -> float:
        return float(
            np.mean(
                [
                    np.corrcoef(
                        m.predict(a.x, ids, Center.context(a), center.pair(a.language, ids)),
                        center.true_p(a.x, a.language),
                    )[0, 1]
                    for a in probe
                ]
            )
        )

    assert corr(shaped) > corr(slopes) + 0.1
    assert shaped.card["holdout"]["log_loss"] < slopes.card["holdout"]["log_loss"]


def test_auto_fits_both_candidates_and_serves_the_better_on_the_newest_rows(
    specialist: tuple[Center, TrainingSet],
) -> None:
    center, history = specialist
    m = RoutingModel.fit(history, agent_features=center.agent_features())
    choice = m.card["choice"]
    losses = choice["holdout_log_loss"]
    assert set(losses) == {"ridge", "trees"}
    assert choice["chosen"] == m.agent_model == min(losses, key=losses.__getitem__)
    assert m.card["holdout"]["log_loss"] == pytest.approx(losses[m.agent_model])
    again = RoutingModel.from_json(m.to_json())
    a = history.customer[0]
    ids = center.agent_ids
    pair = center.pair("en", ids)
    assert again.predict(a, ids, (0.0,), pair) == pytest.approx(m.predict(a, ids, (0.0,), pair))


def test_a_model_saved_before_shape_terms_still_loads_and_predicts_the_same(
    model: RoutingModel, center: Center
) -> None:
    """Format 1 had raw slopes and no shape: read as such."""
    old = RoutingModel.fit(
        training_set(
            simulate(
                center, center.arrivals(days=3, seed=8), Policy("li", "standard", center.queue())
            ),
            center,
        ),
        agent_features=center.agent_features(),
        agent_model="ridge",
        shape=False,
    )
    data = old.to_json()
    mean, sd = np.asarray(data["slopeScale"])
    theta = np.asarray(data["theta"])
    theta[:, 0] -= theta[:, 1:] @ (mean / sd)  # the same model with raw slopes
    theta[:, 1:] /= sd
    v1 = {
        k: v for k, v in data.items() if k not in {"slopeScale", "shape", "shapeContext", "support"}
    }
    v1 |= {"format": 1, "theta": theta.tolist()}
    loaded = RoutingModel.from_json(v1)
    x = np.array([0.3, -1.2, 0.5, 2.0])
    ids = center.agent_ids
    pair = center.pair("en", ids)
    assert loaded.predict(x, ids, (0.0,), pair) == pytest.approx(old.predict(x, ids, (0.0,), pair))


def test_features_missing_everywhere_or_often_are_no_trouble() -> None:
    """Server history: journey features are missing for most customers, one for all."""
    data = synthetic(2, rookie_rows=0)
    rng = np.random.default_rng(2)
    x = np.hstack(
        [data.customer, np.full((len(data), 1), np.nan), rng.integers(0, 3, (len(data), 1))]
    )
    x[rng.random(len(data)) < 0.7, 3] = np.nan
    sparse = TrainingSet(x, data.context, data.agents, data.labels, data.times_ms)
    m = RoutingModel.fit(sparse, agent_model="ridge")
    assert np.isfinite(m.slope_scale).all()
    p = m.predict([0.1, np.nan, np.nan, 2.0], ["v0", "v9"])
    assert np.isfinite(p).all() and (p > 0).all()
