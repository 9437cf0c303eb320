"""Training one outcome model: time split, LightGBM, calibration, baselines, model card.

The examples of an outcome (:mod:`opportune.ml.examples`) are split by the visit's start
time — the oldest visits train, then a validation slice (early stopping), a calibration
slice, and the newest visits test — so the card's figures are those of a model scoring
visits after everything it learned from, as it will in production. LightGBM learns the
log-odds with every visit weighted once; a calibrator (isotonic or Platt, whichever is
better out of fold on the calibration slice) turns them into per-event probabilities. The
card records the data window, counts, the test figures beside two baselines (the base rate;
a logistic regression on standardised features, calibrated the same way), and the sorted
distribution of the test visits' maximum probabilities that serving turns into quantiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np
from rich.progress import Progress
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from opportune.ml.booster import raw_scores
from opportune.ml.calibration import (
    Calibrator,
    choose_calibrator,
    lift_by_decile,
    reliability,
    summary,
)
from opportune.ml.examples import OutcomeExamples
from opportune.ml.features import FeatureSpec

SPLITS = ("train", "validation", "calibration", "test")
SHARES = (0.6, 0.1, 0.1, 0.2)  # of the visits, oldest to newest, in SPLITS order


class TrainingError(ValueError):
    """The examples cannot make a model (too few, or a slice without any achievement)."""


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """Hyper-parameters and split shares; every one has a default that works here."""

    shares: tuple[float, float, float, float] = SHARES
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 200
    feature_fraction: float = 0.9
    lambda_l2: float = 1.0
    max_rounds: int = 2000
    early_stopping_rounds: int = 50
    num_threads: int = 2
    seed: int = 7
    baselines: bool = True
    baseline_rows: int = 200_000  # the logistic regression's training rows, at most
    reference_points: int = 2000

    def params(self) -> dict[str, Any]:
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "min_sum_hessian_in_leaf": 1e-6,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbose": -1,
        }


@dataclass(slots=True)
class TrainedModel:
    """A trained, calibrated model and its card, ready for the registry; ``test`` and
    ``test_p`` are the test slice and its probabilities (for comparing with the active
    model; not saved)."""

    outcome: str
    spec: FeatureSpec
    model_text: str
    calibrator: Calibrator
    card: dict[str, Any]
    test: OutcomeExamples
    test_p: np.ndarray
    booster: lgb.Booster = field(repr=False)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of the rows of ``X`` (this model's layout)."""
        return self.calibrator.many(raw_scores(self.booster, X, 2))


def _iso(ms: int | float | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def split_by_time(
    ex: OutcomeExamples, shares: tuple[float, ...] = SHARES
) -> dict[str, OutcomeExamples]:
    """The examples cut by visit start into consecutive slices of the given visit shares
    (train, validation, calibration, test: oldest to newest). A visit is never cut."""
    if len(shares) != len(SPLITS) or abs(sum(shares) - 1.0) > 1e-9 or min(shares) <= 0:
        raise ValueError("four positive shares adding up to 1 are expected")
    visits = np.unique(ex.visit)
    first = np.full(len(ex.visit_ids), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, ex.visit, ex.started)
    starts = first[visits]
    order = visits[np.lexsort((visits, starts))]
    bounds = np.round(np.cumsum((0.0, *shares)) * len(order)).astype(int)
    slice_of = np.empty(len(ex.visit_ids), dtype=np.int8)
    for k in range(len(SPLITS)):
        slice_of[order[bounds[k] : bounds[k + 1]]] = k
    where = slice_of[ex.visit]
    return {name: ex.subset(where == k) for k, name in enumerate(SPLITS)}


def _counts(ex: OutcomeExamples) -> dict[str, Any]:
    return {
        "visits": ex.visits,
        "examples": len(ex),
        "positives": int(ex.y.sum()),
        "visitsAchieving": len(np.unique(ex.visit[ex.y > 0])),
        "from": _iso(int(ex.started.min())) if len(ex) else None,
        "to": _iso(int(ex.started.max())) if len(ex) else None,
    }


def visit_maxima(p: np.ndarray, visit: np.ndarray) -> np.ndarray:
    """The highest probability of each visit (sorted ascending)."""
    if not len(p):
        return np.zeros(0)
    order = np.argsort(visit, kind="stable")
    v = visit[order]
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
    return np.sort(np.maximum.reduceat(p[order], starts))


def downsample_sorted(values: np.ndarray, points: int) -> list[float]:
    """At most ``points`` values at evenly spaced ranks of a sorted array, the smallest and
    largest kept: the share below any p stays within 1/points of the full array's."""
    if len(values) <= points:
        return [float(v) for v in values]
    idx = np.round(np.linspace(0, len(values) - 1, points)).astype(int)
    return [float(v) for v in values[idx]]


def _check_slices(outcome: str, parts: dict[str, OutcomeExamples]) -> None:
    for name, part in parts.items():
        if not len(part):
            raise TrainingError(f"{outcome}: the {name} slice is empty; more history is needed")
        if part.y.min() == part.y.max():
            raise TrainingError(
                f"{outcome}: the {name} slice ({part.visits} visits) has "
                + ("no achievement" if part.y.max() == 0 else "only achievements")
                + "; more history is needed"
            )


def _logistic_baseline(
    parts: dict[str, OutcomeExamples], config: TrainingConfig
) -> tuple[dict[str, Any], float]:
    t = time.perf_counter()
    lr = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=300))
    tr = parts["train"]
    if len(tr) > config.baseline_rows:  # a baseline need not cost more than the model
        keep = np.random.default_rng(config.seed).choice(len(tr), config.baseline_rows, False)
        tr = tr.subset(np.sort(keep))
    lr.fit(tr.X, tr.y, logisticregression__sample_weight=tr.weight)
    cal = parts["calibration"]
    calibrator, _ = choose_calibrator(
        lr.decision_function(cal.X), cal.y, cal.visit, seed=config.seed
    )
    te = parts["test"]
    p = calibrator.many(lr.decision_function(te.X))
    out = summary(p, te.y, te.prefix)
    out["calibration"] = type(calibrator).__name__.lower()
    out["trainedOnExamples"] = len(tr)
    return out, time.perf_counter() - t


def train_outcome_model(
    ex: OutcomeExamples,
    config: TrainingConfig | None = None,
    *,
    now_ms: int | None = None,
    progress: bool = False,
) -> TrainedModel:
    """Fit, calibrate and evaluate a model of ``ex.outcome``; the card says how it did."""
    cfg = config or TrainingConfig()
    t0 = time.perf_counter()
    parts = split_by_time(ex, cfg.shares)
    _check_slices(ex.outcome, parts)
    tr, va, ca, te = (parts[k] for k in SPLITS)
    names = ex.spec.names
    # LightGBM refuses ':' in feature names: it keeps positions, the card keeps names.
    train_set = lgb.Dataset(tr.X, tr.y, weight=tr.weight, params={"verbose": -1})
    valid_set = lgb.Dataset(va.X, va.y, weight=va.weight, reference=train_set)
    callbacks: list[Callable[..., None]] = [
        lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)
    ]
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"training {ex.outcome}", total=cfg.max_rounds)

        def advance(env: Any) -> None:
            bar.update(task, completed=env.iteration + 1)

        callbacks.append(advance)
        booster = lgb.train(
            cfg.params(),
            train_set,
            num_boost_round=cfg.max_rounds,
            valid_sets=[valid_set],
            valid_names=["validation"],
            callbacks=callbacks,
        )
    best = booster.best_iteration or booster.current_iteration()
    model_text = booster.model_to_string(num_iteration=best)
    final = lgb.Booster(model_str=model_text)
    t_fit = time.perf_counter() - t0

    t1 = time.perf_counter()
    calibrator, candidates = choose_calibrator(
        raw_scores(final, ca.X, cfg.num_threads),
        ca.y,
        ca.visit,
        seed=cfg.seed,
    )
    t_cal = time.perf_counter() - t1

    p = calibrator.many(raw_scores(final, te.X, cfg.num_threads))
    test = summary(p, te.y, te.prefix)
    test["reliability"] = reliability(p, te.y)
    test["liftByDecile"] = lift_by_decile(p, te.y)
    maxima = visit_maxima(p, te.visit)
    baselines: dict[str, Any] = {}
    t_base = 0.0
    if cfg.baselines:
        base = float(tr.y.mean())
        baselines["baseRate"] = summary(np.full(len(te), base), te.y)
        baselines["baseRate"]["rate"] = base
        baselines["logisticRegression"], t_base = _logistic_baseline(parts, cfg)
    gains = final.feature_importance("gain")
    top = sorted(zip(names, gains.tolist(), strict=True), key=lambda kv: -kv[1])[:15]
    card: dict[str, Any] = {
        "outcome": ex.outcome,
        "trainedAt": _iso(now_ms if now_ms is not None else time.time() * 1000),
        "trainedAtMs": int(now_ms if now_ms is not None else time.time() * 1000),
        "data": {
            **_counts(ex),
            "splits": {k: _counts(v) for k, v in parts.items()},
            "label": "achieved at a later event of the same visit",
            "weighting": "each visit weighs 1 in training (1 / its examples); "
            "figures count every test prefix once",
        },
        "model": {
            "kind": "lightgbm",
            "version": lgb.__version__,
            "trees": int(best),
            "params": cfg.params(),
        },
        "features": names,
        "featureSpec": ex.spec.to_json(),
        "topFeatures": [{"feature": n, "gain": round(g, 3)} for n, g in top if g > 0],
        "calibration": {
            "method": type(calibrator).__name__.lower(),
            "outOfFoldEce": candidates,
        },
        "test": test,
        "baselines": baselines,
        "trainingSeconds": {
            "fit": round(t_fit, 3),
            "calibration": round(t_cal, 3),
            "baselines": round(t_base, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
        "referenceMax": downsample_sorted(maxima, cfg.reference_points),
        "referenceVisits": len(maxima),
    }
    return TrainedModel(ex.outcome, ex.spec, model_text, calibrator, card, te, p, final)


def headline(card: dict[str, Any]) -> str:
    """One line of a card's figures, for the CLI and logs."""
    t = card["test"]
    lr = card.get("baselines", {}).get("logisticRegression")
    d = card["data"]

    def f(v: float | None, nd: int = 3) -> str:
        return "n/a" if v is None else f"{v:.{nd}f}"

    text = (
        f"{d['visits']} visits, {d['examples']} examples ({d['positives']} positive); test: "
        f"ROC AUC {f(t['rocAuc'])}, PR AUC {f(t['prAuc'])}, Brier {f(t['brier'], 4)}, "
        f"ECE {f(t['ece'], 4)}"
    )
    if lr:
        text += f"; logistic regression AUC {f(lr['rocAuc'])}"
    return text
