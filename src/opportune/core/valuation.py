"""Proof of value: the comparison test of predictive against standard routing, its time
slices, and the off-policy benefit assessment made before a queue turns predictive on.

**Comparison test.** Two arms (predictive, standard) of interactions, each with a KPI
label. For a rate the confidence interval of the difference is Newcombe's hybrid score
interval (Newcombe 1998, method 10: Wilson intervals per arm, combined), which keeps its
coverage near 0 and 1 and with small arms where the Wald interval does not; the p-value is
the pooled two-proportion z-test. For an amount (sales value, handle time) both are the
normal approximation with unpooled (Welch) variances. Each arm also reports its mean wait
and handle time: what the uplift costs.

**Time slices.** Arms alternate in fixed slices of time (the same agents serve both), so a
slice's first minutes carry the previous arm's queue; ``settle_ms`` leaves them out, and
the first ``warmup_slices`` slices are not measured at all.

**Off-policy benefit assessment.** From decisions logged under a randomised policy (each
with the propensity of its chosen agent), the value of another policy is estimated by
inverse propensity scoring (IPS, optionally self-normalised) or doubly robust (DR: a reward
model's prediction for the target's choice, corrected by the weighted residual of the
logged one). Confidence intervals are the sandwich (CLT) variance of the per-decision
terms, treating the reward model as fixed, or a percentile bootstrap with an explicit rng.
Assumptions: every choice the target policy can make had a logged propensity > 0
(checked); no unmeasured confounding (the logged propensity is the one the policy really
used, given what the log records); stationarity (customers, agents and outcomes behave as
they did in the log, and the target's choices would not have changed who was free for
later decisions — the estimate is per decision, on the logged candidate sets).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

# The standard normal of the intervals and tests: the standard library's (SciPy's
# ``norm`` agrees to 1e-15 here and importing scipy.stats costs a server ~47 MB).
_NORMAL = NormalDist()


def _sf(z: float) -> float:
    """P(Z > z) for the standard normal, accurate in the tail (via erfc)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True, slots=True)
class ArmSummary:
    n: int
    mean: float  # KPI rate (binary) or mean amount
    variance: float  # sample variance of the label
    mean_wait_s: float = 0.0
    mean_handle_s: float = 0.0


def summarise(
    labels: Sequence[float], waits_s: Sequence[float] = (), handles_s: Sequence[float] = ()
) -> ArmSummary:
    """One arm's figures from its interactions' labels, waits and handle times."""
    y = np.asarray(labels, dtype=float)
    n = len(y)
    return ArmSummary(
        n=n,
        mean=float(y.mean()) if n else 0.0,
        variance=float(y.var(ddof=1)) if n > 1 else 0.0,
        mean_wait_s=float(np.mean(waits_s)) if len(waits_s) else 0.0,
        mean_handle_s=float(np.mean(handles_s)) if len(handles_s) else 0.0,
    )


@dataclass(frozen=True, slots=True)
class Comparison:
    test_rate: float
    control_rate: float
    uplift: float  # test - control
    relative_uplift: float  # uplift / control (nan when control is 0)
    ci_low: float  # of the uplift
    ci_high: float
    p_value: float  # two-sided
    confidence: float
    ci_method: str
    wait_cost_s: float  # test's mean wait - control's
    handle_cost_s: float  # test's mean handle time - control's


def wilson(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion.

    >>> [round(x, 4) for x in wilson(56, 70)]
    [0.6918, 0.877]
    """
    if n == 0:
        return 0.0, 1.0
    z = float(_NORMAL.inv_cdf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0 or n successes a bound is exactly 0 or 1; rounding must not move it off.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    return low, 1.0 if successes >= n else min(1.0, centre + half)


def newcombe(
    s1: float, n1: int, s2: float, n2: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 (method 10 of Newcombe 1998).

    >>> [round(x, 4) for x in newcombe(56, 70, 48, 80)]
    [0.0524, 0.3339]
    """
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson(s1, n1, confidence)
    l2, u2 = wilson(s2, n2, confidence)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt(
        (u1 - p1) ** 2 + (p2 - l2) ** 2
    )


def compare(
    test: ArmSummary, control: ArmSummary, *, binary: bool, confidence: float = 0.95
) -> Comparison:
    """The comparison test: KPI per arm, uplift with its interval, two-sided p-value."""
    if test.n == 0 or control.n == 0:
        raise ValueError("both arms need interactions")
    d = test.mean - control.mean
    if binary:
        s1, s2 = test.mean * test.n, control.mean * control.n
        low, high = newcombe(s1, test.n, s2, control.n, confidence)
        pooled = (s1 + s2) / (test.n + control.n)
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / test.n + 1 / control.n))
        p_value = 2 * _sf(abs(d) / se0) if se0 > 0 else 1.0
        method = "Newcombe hybrid score; pooled z-test"
    else:
        se = math.sqrt(test.variance / test.n + control.variance / control.n)
        z = float(_NORMAL.inv_cdf(0.5 + confidence / 2))
        low, high = d - z * se, d + z * se
        p_value = 2 * _sf(abs(d) / se) if se > 0 else (1.0 if d == 0 else 0.0)
        method = "normal approximation (Welch variances)"
    return Comparison(
        test_rate=test.mean,
        control_rate=control.mean,
        uplift=d,
        relative_uplift=d / control.mean if control.mean else math.nan,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        confidence=confidence,
        ci_method=method,
        wait_cost_s=test.mean_wait_s - control.mean_wait_s,
        handle_cost_s=test.mean_handle_s - control.mean_handle_s,
    )


@dataclass(frozen=True, slots=True)
class SliceArm:
    arm: str
    index: int  # the slice number from the test's start
    measured: bool  # False in warm-up slices and in each slice's settling time


def time_slice(
    at_ms: int,
    *,
    start_ms: int,
    slice_ms: int,
    warmup_slices: int = 1,
    settle_ms: int = 0,
    arms: Sequence[str] = ("predictive", "standard"),
) -> SliceArm:
    """Which arm runs at ``at_ms`` when arms alternate slice by slice, and whether an
    interaction arriving then counts in the comparison."""
    if at_ms < start_ms:
        raise ValueError("at_ms is before the test's start")
    if slice_ms <= 0 or not 0 <= settle_ms < slice_ms:
        raise ValueError("need slice_ms > 0 and 0 <= settle_ms < slice_ms")
    offset = at_ms - start_ms
    index = offset // slice_ms
    measured = index >= warmup_slices and offset % slice_ms >= settle_ms
    return SliceArm(arms[index % len(arms)], index, measured)


def assign_arm(
    interaction_id: str,
    now_ms: int,
    *,
    predictive: bool,
    control_share: float,
    mode: str = "off",
    start_ms: int | None = None,
    slice_ms: int = 3_600_000,
    warmup_slices: int = 1,
) -> str:
    """Which routing an interaction gets: ``standard`` (no predictive routing), ``control``
    (the permanent control share), ``predictive``; during a comparison test ``predictive``
    or ``standard`` at random per interaction (``mode="interaction"``) or by alternating
    time slices (``"slices"``), ``warmup`` in a slice that is not measured.

    Random by a hash of the interaction id: uniform, and the same on every process.

    >>> assign_arm("i1", 0, predictive=False, control_share=0.2)
    'standard'
    >>> assign_arm("i1", 90, predictive=True, control_share=0.2, mode="slices", start_ms=0,
    ...            slice_ms=100, warmup_slices=1)
    'warmup'
    """
    if not predictive:
        return "standard"
    digest = hashlib.blake2b(f"arm\x00{interaction_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if mode == "interaction":
        return "predictive" if u < 0.5 else "standard"
    if mode == "slices" and start_ms is not None and now_ms >= start_ms:
        arm = time_slice(now_ms, start_ms=start_ms, slice_ms=slice_ms, warmup_slices=warmup_slices)
        return arm.arm if arm.measured else "warmup"
    return "control" if u < control_share else "predictive"


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float
    se: float
    ci_low: float
    ci_high: float
    n: int
    effective_n: float  # (Σw)² / Σw² of the importance weights: how much of the log counts
    method: str


def _weights(
    logging_propensity: Sequence[float], target_probability: Sequence[float]
) -> np.ndarray:
    mu = np.asarray(logging_propensity, dtype=float)
    pi = np.asarray(target_probability, dtype=float)
    if mu.shape != pi.shape:
        raise ValueError("one logging propensity and one target probability per decision")
    bad = np.nonzero((pi > 0) & (mu <= 0))[0]
    if len(bad):
        raise ValueError(
            f"decision {int(bad[0])}: the target policy acts where the logged propensity is 0 "
            "(off-policy estimates need logged propensity > 0 for the target's choices)"
        )
    return np.where(pi > 0, pi / np.where(mu > 0, mu, 1.0), 0.0)


def _interval(
    terms: np.ndarray,
    value: float,
    method: str,
    weights: np.ndarray,
    confidence: float,
    rng: np.random.Generator | None,
    n_boot: int,
    statistic: str = "mean",
) -> Estimate:
    n = len(terms)
    z = float(_NORMAL.inv_cdf(0.5 + confidence / 2))
    se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    low, high = value - z * se, value + z * se
    if rng is not None and n_boot > 0:
        idx = rng.integers(0, n, size=(n_boot, n))
        if statistic == "ratio":  # self-normalised IPS: Σ w r / Σ w per resample
            num, den = terms[idx].sum(axis=1), weights[idx].sum(axis=1)
            boots = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        else:
            boots = terms[idx].mean(axis=1)
        alpha = (1 - confidence) / 2
        low, high = (float(x) for x in np.quantile(boots, [alpha, 1 - alpha]))
        se = float(boots.std(ddof=1))
        method += "; percentile bootstrap"
    else:
        method += "; sandwich"
    sw, sw2 = float(weights.sum()), float((weights**2).sum())
    ess = sw * sw / sw2 if sw2 > 0 else 0.0
    return Estimate(value, se, low, high, n, ess, method)


def ips(
    rewards: Sequence[float],
    logging_propensity: Sequence[float],
    target_probability: Sequence[float],
    *,
    self_normalised: bool = False,
    confidence: float = 0.95,
    rng: np.random.Generator | None = None,
    n_boot: int = 0,
) -> Estimate:
    """Inverse propensity estimate of the target policy's mean reward per decision.

    ``target_probability[i]`` is the probability the target gives the logged agent of
    decision ``i`` (1 or 0 for a deterministic target).
    """
    r = np.asarray(rewards, dtype=float)
    w = _weights(logging_propensity, target_probability)
    if not self_normalised:
        terms = w * r
        return _interval(terms, float(terms.mean()), "IPS", w, confidence, rng, n_boot)
    if w.sum() <= 0:
        raise ValueError("no logged decision agrees with the target policy")
    value = float((w * r).sum() / w.sum())
    # Delta method: the ratio's influence terms are w (r - V) / mean(w).
    terms = w * (r - value) / w.mean() + value
    if rng is not None and n_boot > 0:
        return _interval(w * r, value, "SNIPS", w, confidence, rng, n_boot, "ratio")
    return _interval(terms, value, "SNIPS", w, confidence, None, 0)


def _residuals(rewards: Sequence[float], q_logged: Sequence[float]) -> np.ndarray:
    """What the reward model missed on each logged choice."""
    resid: np.ndarray = np.asarray(rewards, dtype=float) - np.asarray(q_logged, dtype=float)
    return resid


def _dr_terms(resid: np.ndarray, w: np.ndarray, q_policy: Sequence[float]) -> np.ndarray:
    """Per decision: the model's expected reward under a policy plus the weighted residual."""
    terms: np.ndarray = np.asarray(q_policy, dtype=float) + w * resid
    return terms


def doubly_robust(
    rewards: Sequence[float],
    logging_propensity: Sequence[float],
    target_probability: Sequence[float],
    q_logged: Sequence[float],
    q_target: Sequence[float],
    *,
    confidence: float = 0.95,
    rng: np.random.Generator | None = None,
    n_boot: int = 0,
) -> Estimate:
    """Doubly robust estimate: ``q_target`` (the reward model's expected reward under the
    target policy) plus the importance-weighted residual of the logged choice
    (``rewards - q_logged``). Unbiased if either the propensities or the model are right."""
    resid = _residuals(rewards, q_logged)
    w = _weights(logging_propensity, target_probability)
    terms = _dr_terms(resid, w, q_target)
    return _interval(terms, float(terms.mean()), "DR", w, confidence, rng, n_boot)


def benefit(
    rewards: Sequence[float],
    logging_propensity: Sequence[float],
    target_probability: Sequence[float],
    baseline_probability: Sequence[float],
    q_logged: Sequence[float],
    q_target: Sequence[float],
    q_baseline: Sequence[float],
    *,
    confidence: float = 0.95,
    rng: np.random.Generator | None = None,
    n_boot: int = 0,
) -> Estimate:
    """Benefit assessment: DR value of the target policy minus that of the baseline (e.g.
    standard routing), paired decision by decision so their shared noise cancels."""
    resid = _residuals(rewards, q_logged)
    wt = _weights(logging_propensity, target_probability)
    wb = _weights(logging_propensity, baseline_probability)
    terms = _dr_terms(resid, wt, q_target) - _dr_terms(resid, wb, q_baseline)
    return _interval(terms, float(terms.mean()), "DR difference", wt, confidence, rng, n_boot)
