"""The contact-center simulator: arrivals against the fixture, the hidden truth, runs in
both regimes driven by the routing core, outcomes, and off-policy estimates on its logs
against the true value it knows."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from itertools import pairwise

import numpy as np
import pytest

from opportune.core.kpis import credit
from opportune.core.routing import PredictiveSettings
from opportune.core.valuation import doubly_robust, ips
from opportune.sim.center import (
    DAY_MS,
    HOUR_MS,
    PROFILE_PATH,
    SPECIALIST,
    START_MS,
    ArrivalProfile,
    Center,
    CenterConfig,
    TruthParams,
)
from opportune.sim.contact_center import Policy, SimResult, oracle_scorer, simulate, training_set

SMALL = CenterConfig(agents=24, calls_per_day=1400.0)
QUEUEING = CenterConfig(agents=24, calls_per_day=1400.0, occupancy=1.05)


def test_the_fixture_cites_its_source_and_is_a_distribution() -> None:
    raw = json.loads(PROFILE_PATH.read_text())
    assert "Weinberg, Brown & Stroud" in raw["source"] and "fpp3" in raw["source"]
    assert raw["hours"] == list(range(7, 21))
    assert sum(raw["share_by_hour"]) == pytest.approx(1.0, abs=1e-5)
    assert np.mean(list(raw["weekday_factor"].values())) == pytest.approx(1.0, abs=0.01)
    assert raw["weekday_factor"]["mon"] > 1.05  # Mondays are the busy day at this bank
    assert 0 < raw["daily_cv"] < 0.2 and 0 < raw["hourly_cv"] < 0.2


def test_arrivals_follow_the_profile() -> None:
    center = Center(CenterConfig(calls_per_day=800.0), seed=3)
    profile = ArrivalProfile.load()
    days = 100
    stream = center.arrivals(days=days, seed=9)
    per_hour = np.zeros(len(profile.hours))
    per_day = np.zeros(days)
    for a in stream:
        offset = a.at_ms - START_MS
        cal_day, hour = offset // DAY_MS, (offset % DAY_MS) // HOUR_MS
        assert cal_day % 7 < 5  # weekdays only
        per_hour[profile.hours.index(hour)] += 1
        per_day[cal_day // 7 * 5 + cal_day % 7] += 1
    share = per_hour / per_hour.sum()
    # ~80,000 calls: a share's standard error is below 0.0011.
    assert share == pytest.approx(np.array(profile.share_by_hour), abs=0.005)
    weekday = np.array([per_day[d::5].mean() for d in range(5)]) / per_day.mean()
    assert weekday == pytest.approx(np.array(profile.weekday_factor), abs=0.04)
    assert per_day.mean() == pytest.approx(800, rel=0.03)
    # Day-to-day spread: the fixture's overdispersion on top of Poisson noise (CV of a
    # Poisson day of 800 is 0.035), within its sampling error over 100 days.
    adjusted = per_day / np.array([profile.weekday_factor[d % 5] for d in range(days)])
    expected_cv = math.sqrt(
        profile.daily_cv**2 + profile.hourly_cv**2 / len(profile.hours) + 1 / 800
    )
    assert np.std(adjusted) / np.mean(adjusted) == pytest.approx(expected_cv, rel=0.3)


def test_same_seed_same_calls() -> None:
    center = Center(SMALL, seed=1)
    a = center.arrivals(days=2, seed=4)
    assert a == center.arrivals(days=2, seed=4)
    assert a != center.arrivals(days=2, seed=5)
    assert [x.beta for x in Center(SMALL, seed=1).agents] == [x.beta for x in center.agents]


def test_the_truth_is_the_stated_formula_and_its_effects_tune_apart() -> None:
    center = Center(SMALL, seed=2)
    x = np.array([0.3, -1.0, 0.5, 2.0])
    eta = center.alpha0 + center.weights @ x
    for k, agent in enumerate(center.agents[:5]):
        expected = 1 / (1 + math.exp(-(eta + agent.beta + np.dot(agent.z, x))))
        assert center.true_p(x, "en")[k] == pytest.approx(expected)
        penalty = 0.0 if "es" in agent.languages else center.config.truth.language_penalty
        lower = 1 / (1 + math.exp(-(eta + agent.beta + np.dot(agent.z, x) - penalty)))
        assert center.true_p(x, "es")[k] == pytest.approx(lower)
    same = Center(CenterConfig(truth=TruthParams(agent_sd=0.0, match=0.0)), seed=2)
    assert np.ptp(same.true_p(x, "en")) == pytest.approx(0.0, abs=1e-12)
    skill_only = Center(CenterConfig(truth=TruthParams(agent_sd=0.3, match=0.0)), seed=2)
    y = np.array([-1.0, 0.2, 1.5, 0.0])
    # Without match effects every customer ranks the agents the same way.
    assert np.array_equal(
        np.argsort(skill_only.true_p(x, "en")), np.argsort(skill_only.true_p(y, "en"))
    )
    match_only = Center(CenterConfig(truth=TruthParams(agent_sd=0.0, match=0.5)), seed=2)
    assert not np.array_equal(
        np.argsort(match_only.true_p(x, "en")), np.argsort(match_only.true_p(y, "en"))
    )


SPECIAL = CenterConfig(agents=24, calls_per_day=1400.0, occupancy=0.7, truth=SPECIALIST)


def test_the_specialist_truth_is_the_stated_formula() -> None:
    center = Center(SPECIAL, seed=2)
    t = SPECIAL.truth
    for intent in range(t.intents):
        for x0, language in ((0.3, "en"), (1.4, "en"), (-0.5, "es")):
            x = np.array([x0, -1.0, 0.5, 2.0, intent])
            eta = center.alpha0 + center.weights @ x[:4]
            for k, agent in enumerate(center.agents[:8]):
                e = eta + agent.beta + agent.strengths[intent]
                e += agent.closer if x0 > t.high_value_threshold else 0.0
                if language == "es":
                    e += agent.native - (0.0 if "es" in agent.languages else t.language_penalty)
                assert center.true_p(x, language)[k] == pytest.approx(1 / (1 + math.exp(-e)))
    # Sharp: every agent is strong at one or two intents, a little weak at the rest.
    strong = [sum(s > 0.4 for s in a.strengths) for a in center.agents]
    assert set(strong) <= {1, 2, 3} and min(strong) >= 1
    assert all(sorted(a.strengths)[0] < 0.1 for a in center.agents)
    assert Center(SMALL, seed=2).agents[0].strengths == ()  # the bilinear kind has none


def test_the_specialist_truth_is_no_features_times_agent_vector() -> None:
    """Per agent, the logit as a linear function of the customer's features (the intent as
    the number it is observed as) leaves most of the agent's own effect unexplained."""
    center = Center(SPECIAL, seed=3)
    rng = np.random.default_rng(0)
    x = np.hstack([rng.normal(0, 1, (3000, 4)), rng.integers(0, 6, (3000, 1))])
    logit = np.array([np.log(p / (1 - p)) for p in (center.true_p(r, "en") for r in x)])
    effect = logit - logit.mean(axis=1, keepdims=True)  # each agent's own part
    design = np.hstack([np.ones((len(x), 1)), x])
    fit, *_ = np.linalg.lstsq(design, effect, rcond=None)
    explained = 1 - np.var(effect - design @ fit) / np.var(effect)
    assert explained < 0.3


def test_specialist_outcomes_are_drawn_from_the_truth_the_oracle_scores() -> None:
    center = Center(SPECIAL, seed=4)
    stream = center.arrivals(days=3, seed=4)
    assert {a.x[4] for a in stream} == set(map(float, range(6)))
    oracle = oracle_scorer(center)
    result = simulate(center, stream, Policy("li", "standard", center.queue()))
    answered = [r for r in result.records if r.agent_id is not None]
    index = {a: k for k, a in enumerate(center.agent_ids)}
    by_id = {a.id: a for a in stream}
    for r in answered[:200]:
        truth = center.true_p(r.x, r.language)[index[r.agent_id or ""]]
        assert r.true_p == pytest.approx(truth)
        assert oracle(by_id[r.id], [r.agent_id or ""])[0] == pytest.approx(truth)
    expected = sum(r.true_p for r in answered)
    sd = math.sqrt(sum(r.true_p * (1 - r.true_p) for r in answered))
    assert abs(sum(r.sale for r in answered) - expected) < 4 * sd


def run(config: CenterConfig, method: str, *, oracle: bool = False, days: int = 2) -> SimResult:
    center = Center(config, seed=5)
    stream = center.arrivals(days=days, first_day=10, seed=6)
    queue = center.queue(predictive=PredictiveSettings(enabled=method != "standard"))
    scorer = oracle_scorer(center) if oracle else None
    return simulate(center, stream, Policy(method, method, queue, scorer))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def runs() -> dict[str, SimResult]:
    return {
        "surplus/li": run(SMALL, "standard"),
        "surplus/oracle": run(SMALL, "assignment", oracle=True),
        "queue/li": run(QUEUEING, "standard"),
        "queue/greedy-oracle": run(QUEUEING, "greedy", oracle=True),
        "queue/oracle": run(QUEUEING, "assignment", oracle=True),
    }


def test_every_call_is_answered_or_abandoned_once(runs: dict[str, SimResult]) -> None:
    center = Center(SMALL, seed=5)
    n = len(center.arrivals(days=2, first_day=10, seed=6))
    for name, result in runs.items():
        assert len(result.records) == n, name
        assert len({r.id for r in result.records}) == n
        for r in result.records:
            assert (r.answered_ms is None) != (r.abandoned_ms is None)
            assert r.wait_s >= 0


def test_agents_never_hold_more_than_their_capacity_nor_work_off_shift(
    runs: dict[str, SimResult],
) -> None:
    center = Center(SMALL, seed=5)
    for name, result in runs.items():
        per_agent: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for r in result.records:
            if r.answered_ms is None:
                continue
            per_agent[r.agent_id or ""].append(
                (r.answered_ms, r.answered_ms + round(r.handle_s * 1000))
            )
            offset = r.answered_ms - START_MS
            cal_day, hour = offset // DAY_MS, (offset % DAY_MS) // HOUR_MS
            if 7 <= hour <= 20:  # after 21:00 the last shift stays until the queue is empty
                staffed = center.staffing(cal_day // 7 * 5 + cal_day % 7, int(hour))
                assert center.agent_ids.index(r.agent_id) < staffed, name
        for spans in per_agent.values():
            spans.sort()
            for (_, end), (start, _) in pairwise(spans):
                assert start >= end, name  # capacity 1: one call at a time


def test_both_regimes(runs: dict[str, SimResult]) -> None:
    surplus, queue = runs["surplus/li"].metrics(), runs["queue/li"].metrics()
    assert surplus["asa_s"] < 6 and surplus["abandonment"] < 0.04
    assert surplus["service_level"] > 0.85
    assert queue["asa_s"] > 4 * surplus["asa_s"] and queue["abandonment"] > 0.1
    assert queue["occupancy_mean"] > surplus["occupancy_mean"] + 0.15


def test_outcomes_are_drawn_from_the_truth(runs: dict[str, SimResult]) -> None:
    answered = [r for r in runs["surplus/li"].records if r.answered_ms is not None]
    p = np.array([r.true_p for r in answered])
    sales = np.array([r.sale for r in answered], dtype=float)
    se = math.sqrt(float(np.sum(p * (1 - p)))) / len(p)
    assert abs(sales.mean() - p.mean()) < 4 * se
    assert {r.wrap_up for r in answered} == {"sale", "no_sale", "callback", "not_interested"}
    assert all((r.wrap_up == "sale") == r.sale for r in answered)


def test_sales_are_attributed_later_to_their_conversation(runs: dict[str, SimResult]) -> None:
    result = runs["surplus/li"]
    sales = {r.id: r for r in result.records if r.sale}
    assert len(result.attributions) == len(sales)
    for a in result.attributions:
        (t,) = a.touchpoints
        r = sales[t.conversation_id]
        assert (t.agent_id, t.value_share, t.at_ms) == (r.agent_id, 1.0, r.answered_ms)
        assert a.created_ms > (r.answered_ms or 0) + r.handle_s * 1000 - 1
        assert a.value > 0 and a.customer_id == r.customer_id
    credited = credit(result.attributions, window_days=60)
    assert set(credited) == set(sales)
    value_kpi = training_set(result, Center(SMALL, seed=5))
    assert value_kpi.labels.mean() == pytest.approx(len(sales) / len(value_kpi), rel=1e-9)


def test_the_oracle_beats_longest_idle_and_assignment_beats_greedy_in_a_queue(
    runs: dict[str, SimResult],
) -> None:
    m = {k: v.metrics() for k, v in runs.items()}
    assert m["surplus/oracle"]["kpi"] > m["surplus/li"]["kpi"] * 1.1
    assert m["queue/oracle"]["kpi"] > m["queue/li"]["kpi"] * 1.03
    assert m["queue/oracle"]["kpi"] > m["queue/greedy-oracle"]["kpi"]
    # Few free agents in a queue: the anchor's greedy mostly routes by standard rules.
    assert m["queue/greedy-oracle"]["predictive_share"] < 0.5
    assert m["queue/oracle"]["predictive_share"] > 0.5


def test_off_policy_estimates_on_simulated_logs_recover_the_true_value() -> None:
    """Log under ε-greedy on noisy scores; evaluate the greedy choice by the true
    probabilities on the logged candidate sets, where the simulator knows the answer."""
    center = Center(SMALL, seed=8)
    stream = center.arrivals(days=3, seed=8)
    oracle = oracle_scorer(center)
    noise = np.random.default_rng(0).normal(0, 0.08, (len(stream), center.config.agents))
    row = {a.id: k for k, a in enumerate(stream)}

    def noisy(arrival, agent_ids):  # type: ignore[no-untyped-def]
        return oracle(arrival, agent_ids) + noise[row[arrival.id]]

    settings = PredictiveSettings(
        enabled=True,
        min_free_agents=2,
        hold_for_better=False,
        exploration="epsilon_greedy",
        epsilon=0.5,
    )
    log = simulate(
        center, stream, Policy("log", "greedy", center.queue(predictive=settings), noisy), seed=3
    )
    index = {a: k for k, a in enumerate(center.agent_ids)}
    rewards, mu, pi, q_logged, q_target, truth = [], [], [], [], [], []
    for r in log.records:
        d = r.decision
        if d is None or d.method != "predictive":
            continue
        p = center.true_p(r.x, r.language)
        candidates = [a for a, _ in d.scores]
        target = max(candidates, key=lambda a: p[index[a]])
        rewards.append(float(r.sale))
        mu.append(d.propensity)
        pi.append(float(d.agent_id == target))
        q = 0.7 * p + 0.05  # a deliberately biased reward model
        q_logged.append(q[index[d.agent_id]])
        q_target.append(q[index[target]])
        truth.append(p[index[target]])
    assert len(rewards) > 1500
    value = float(np.mean(truth))
    logged = float(np.mean(rewards))
    for est in (
        ips(rewards, mu, pi),
        ips(rewards, mu, pi, self_normalised=True),
        doubly_robust(rewards, mu, pi, q_logged, q_target),
    ):
        assert abs(est.value - value) < 3 * est.se, est
    assert value > logged + 0.02  # the target really differs from what was logged
