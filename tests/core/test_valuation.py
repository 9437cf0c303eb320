"""Proof of value: the comparison test against published and hand-computed cases, time
slices, and off-policy estimators on logs whose true answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from opportune.core.valuation import (
    ArmSummary,
    benefit,
    compare,
    doubly_robust,
    ips,
    newcombe,
    summarise,
    time_slice,
    wilson,
)


@pytest.mark.parametrize(
    ("s1", "n1", "s2", "n2", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10.
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
    ],
)
def test_newcombe_interval_matches_the_published_examples(
    s1: int, n1: int, s2: int, n2: int, low: float, high: float
) -> None:
    got = newcombe(s1, n1, s2, n2)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_by_hand() -> None:
    # 8/10, z = 1.959964: centre = (0.8 + z²/20) / (1 + z²/10), half-width likewise.
    z = 1.959964
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z / (1 + z * z / 10) * math.sqrt(0.8 * 0.2 / 10 + z * z / 400)
    assert wilson(8, 10) == pytest.approx((centre - half, centre + half), abs=1e-6)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


def test_comparison_of_rates_by_hand() -> None:
    # 60/200 against 40/200: pooled 0.25, se = sqrt(0.25 * 0.75 * 2 / 200) = 0.0433013,
    # z = 2.309401, two-sided p = 0.020921.
    test = ArmSummary(200, 0.30, 0.21, mean_wait_s=14.0, mean_handle_s=300.0)
    control = ArmSummary(200, 0.20, 0.16, mean_wait_s=11.5, mean_handle_s=290.0)
    c = compare(test, control, binary=True)
    assert c.uplift == pytest.approx(0.10)
    assert c.relative_uplift == pytest.approx(0.5)
    assert c.p_value == pytest.approx(0.020921, abs=2e-6)
    assert (c.ci_low, c.ci_high) == pytest.approx(newcombe(60, 200, 40, 200))
    assert c.ci_low > 0
    assert c.wait_cost_s == pytest.approx(2.5) and c.handle_cost_s == pytest.approx(10.0)
    assert "Newcombe" in c.ci_method


def test_comparison_of_amounts_by_hand() -> None:
    test = summarise([1, 2, 3, 4], waits_s=[5, 7], handles_s=[100, 120])
    control = summarise([2, 2, 2, 2])
    assert test.mean == 2.5 and test.variance == pytest.approx(5 / 3)
    c = compare(test, control, binary=False)
    se = math.sqrt(5 / 3 / 4)  # the control arm has no variance
    assert c.uplift == pytest.approx(0.5)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.5 - 1.959964 * se, 0.5 + 1.959964 * se))
    assert c.p_value == pytest.approx(0.438578, abs=1e-5)  # 2 (1 - Φ(0.774597))
    assert c.wait_cost_s == 6.0 and c.handle_cost_s == 110.0
    with pytest.raises(ValueError, match="both arms"):
        compare(summarise([]), control, binary=False)


@pytest.mark.parametrize(
    ("offset_min", "arm", "index", "measured"),
    [
        (0, "predictive", 0, False),  # warm-up slice
        (59, "predictive", 0, False),
        (60, "standard", 1, False),  # settling: the first 5 minutes of a slice
        (64, "standard", 1, False),
        (65, "standard", 1, True),
        (120, "predictive", 2, False),
        (130, "predictive", 2, True),
        (190, "standard", 3, True),
    ],
)
def test_time_slices_alternate_and_leave_out_warm_up(
    offset_min: int, arm: str, index: int, measured: bool
) -> None:
    start = 1_700_000_000_000
    got = time_slice(
        start + offset_min * 60_000,
        start_ms=start,
        slice_ms=3_600_000,
        warmup_slices=1,
        settle_ms=300_000,
    )
    assert (got.arm, got.index, got.measured) == (arm, index, measured)


def test_time_slice_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="before"):
        time_slice(0, start_ms=10, slice_ms=5)
    with pytest.raises(ValueError, match="settle_ms"):
        time_slice(10, start_ms=0, slice_ms=5, settle_ms=5)


# ---- off-policy, on a bandit whose truth is known ---------------------------------------


def logged_bandit(seed: int, n: int = 20_000, k: int = 5) -> dict[str, np.ndarray]:
    """Contexts with known success probabilities per arm; a softmax logging policy on noisy
    scores; a deterministic target (argmax of a better score); a baseline (arm 0)."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-(rng.normal(-1.5, 0.6, (n, 1)) + rng.normal(0, 0.5, (n, k)))))
    noisy = p + rng.normal(0, 0.1, (n, k))
    logits = noisy / 0.2
    mu = np.exp(logits - logits.max(axis=1, keepdims=True))
    mu /= mu.sum(axis=1, keepdims=True)
    chosen = np.array([rng.choice(k, p=row) for row in mu])
    rows = np.arange(n)
    reward = (rng.random(n) < p[rows, chosen]).astype(float)
    target = np.argmax(p + rng.normal(0, 0.03, (n, k)), axis=1)
    q = p * 0.8 + 0.03  # a biased reward model
    return {
        "reward": reward,
        "mu": mu[rows, chosen],
        "pi": (chosen == target).astype(float),
        "base": (chosen == 0).astype(float),
        "q_logged": q[rows, chosen],
        "q_target": q[rows, target],
        "q_base": q[rows, 0],
        "truth": np.array(p[rows, target].mean()),
        "truth_base": np.array(p[:, 0].mean()),
    }


def test_ips_and_dr_recover_the_known_value_of_the_target_policy() -> None:
    d = logged_bandit(1)
    truth = float(d["truth"])
    plain = ips(d["reward"], d["mu"], d["pi"])
    snips = ips(d["reward"], d["mu"], d["pi"], self_normalised=True)
    dr = doubly_robust(d["reward"], d["mu"], d["pi"], d["q_logged"], d["q_target"])
    for est in (plain, snips, dr):
        assert abs(est.value - truth) < 3 * est.se, est
        assert est.ci_low < truth < est.ci_high, est
    assert dr.se < plain.se  # the reward model removes most of the variance
    assert 0 < plain.effective_n < len(d["reward"])
    # A value far from the logging policy's own mean reward: the estimate really moved.
    assert abs(truth - d["reward"].mean()) > 5 * dr.se


def test_dr_is_unbiased_with_a_wrong_reward_model() -> None:
    d = logged_bandit(2)
    flat = np.full_like(d["q_logged"], 0.5)
    dr = doubly_robust(d["reward"], d["mu"], d["pi"], flat, flat)
    assert abs(dr.value - float(d["truth"])) < 3 * dr.se


def test_benefit_of_the_target_over_a_baseline() -> None:
    d = logged_bandit(3)
    est = benefit(
        d["reward"], d["mu"], d["pi"], d["base"], d["q_logged"], d["q_target"], d["q_base"]
    )
    gain = float(d["truth"] - d["truth_base"])
    assert abs(est.value - gain) < 3 * est.se
    assert est.ci_low > 0


def test_bootstrap_interval_agrees_with_the_sandwich() -> None:
    d = logged_bandit(4, n=5000)
    sandwich = doubly_robust(d["reward"], d["mu"], d["pi"], d["q_logged"], d["q_target"])
    boot = doubly_robust(
        d["reward"],
        d["mu"],
        d["pi"],
        d["q_logged"],
        d["q_target"],
        rng=np.random.default_rng(0),
        n_boot=400,
    )
    assert boot.value == sandwich.value
    assert boot.se == pytest.approx(sandwich.se, rel=0.2)
    assert "bootstrap" in boot.method and "sandwich" in sandwich.method
    sn = ips(
        d["reward"],
        d["mu"],
        d["pi"],
        self_normalised=True,
        rng=np.random.default_rng(0),
        n_boot=400,
    )
    assert sn.ci_low < sn.value < sn.ci_high


def test_off_policy_needs_positive_logged_propensities_where_the_target_acts() -> None:
    with pytest.raises(ValueError, match="decision 1: the target policy acts"):
        ips([1.0, 0.0], [0.5, 0.0], [1.0, 1.0])
    # Where the target does not act, a zero propensity is harmless.
    assert ips([1.0, 0.0], [0.5, 0.0], [1.0, 0.0]).value == pytest.approx(1.0)


def test_arms_are_deterministic_shared_as_configured_and_slices_alternate() -> None:
    from opportune.core.valuation import assign_arm

    ids = [f"i{k}" for k in range(20_000)]
    arms = [assign_arm(i, 0, predictive=True, control_share=0.2) for i in ids]
    assert arms == [assign_arm(i, 0, predictive=True, control_share=0.2) for i in ids]
    share = arms.count("control") / len(arms)
    assert abs(share - 0.2) < 4 * (0.2 * 0.8 / len(arms)) ** 0.5
    assert set(arms) == {"control", "predictive"}
    coin = [assign_arm(i, 0, predictive=True, control_share=0.2, mode="interaction") for i in ids]
    assert abs(coin.count("predictive") / len(coin) - 0.5) < 4 * (0.25 / len(coin)) ** 0.5
    hour = 3_600_000
    by_slice = [
        assign_arm(
            "x",
            t,
            predictive=True,
            control_share=0.2,
            mode="slices",
            start_ms=0,
            slice_ms=hour,
            warmup_slices=1,
        )
        for t in (10, hour + 10, 2 * hour + 10, 3 * hour + 10)
    ]
    assert by_slice == ["warmup", "standard", "predictive", "standard"]
    assert assign_arm("x", 5, predictive=False, control_share=0.5, mode="interaction") == (
        "standard"
    )
