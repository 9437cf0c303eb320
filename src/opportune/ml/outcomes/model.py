"""Training one outcome model: time split, LightGBM, calibration, baselines, model card.

The examples of an outcome (:mod:`opportune.ml.outcomes.examples`) are split by the visit's start
time — the oldest visits train, then a validation slice (early stopping), a calibration
slice, and the newest visits test — so the card's figures are those of a model scoring
visits after everything it learned from, as it will in production. LightGBM learns the
log-odds with every visit weighted once; a calibrator (isotonic or Platt, whichever is
better out of fold on the calibration slice) turns them into per-event probabilities. The
card records the data window, counts, the test figures beside two baselines (the base rate;
a logistic regression on standardised features, calibrated the same way), and the sorted
distribution of the test visits' maximum probabilities that serving turns into quantiles.

The trees' shape and features are chosen on held-out visits (``selection``); when the
logistic regression ranks the calibration slice better than the chosen trees, it is the
model served (``linear``), and the card's figures are its own, the trees' beside them.

The outcomes of one replay share its feature matrix, so LightGBM bins it once for all of
them, and the logistic regression is fitted in a thread beside the boosting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np
import sklearn
from rich.progress import Progress
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from opportune.ml.booster import raw_scores
from opportune.ml.calibration import (
    Calibrator,
    choose_calibrator,
    lift_by_decile,
    reliability,
    summary,
)
from opportune.ml.outcomes.examples import OutcomeExamples
from opportune.ml.outcomes.features import FeatureSpec
from opportune.ml.outcomes.linear import LinearScorer
from opportune.ml.outcomes.selection import Selection, auc, select

SPLITS = ("train", "validation", "calibration", "test")
LATEST_SHARE = 0.25  # of the test visits, the newest: the card's calibration of late
SHARES = (0.6, 0.1, 0.1, 0.2)  # of the visits, oldest to newest, in SPLITS order
BIN_SAMPLE_ROWS = 200_000  # rows LightGBM bins from (its bin_construct_sample_cnt)


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
            # Row-wise histograms grow the same trees as column-wise ones here, with a
            # third less CPU (660k rows x 134 mostly sparse features, 2 threads).
            "force_row_wise": True,
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
    booster: lgb.Booster | None = field(repr=False)
    linear: LinearScorer | None = field(default=None, repr=False)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of the rows of ``X`` (this model's layout)."""
        if self.linear is not None:
            return self.calibrator.many(self.linear.raw_many(X))
        assert self.booster is not None
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
    """The highest probability of each visit (sorted ascending).

    >>> visit_maxima(np.array([0.1, 0.7, 0.2, 0.4]), np.array([0, 0, 1, 1])).tolist()
    [0.4, 0.7]
    """
    if not len(p):
        return np.zeros(0)
    order = np.argsort(visit, kind="stable")
    v = visit[order]
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
    return np.sort(np.maximum.reduceat(p[order], starts))


def downsample_sorted(values: np.ndarray, points: int) -> list[float]:
    """At most ``points`` values at evenly spaced ranks of a sorted array, the smallest and
    largest kept: the share below any p stays within 1/points of the full array's.

    >>> downsample_sorted(np.arange(10.0), 3)
    [0.0, 4.0, 9.0]
    """
    if len(values) <= points:
        return [float(v) for v in values]
    idx = np.round(np.linspace(0, len(values) - 1, points)).astype(int)
    return [float(v) for v in values[idx]]


def _binned(ex: OutcomeExamples, cfg: TrainingConfig) -> lgb.Dataset:
    """Every row of the replay ``ex`` comes from, binned by LightGBM once for all the
    outcomes trained from it (the features are the same; only rows and labels differ).

    Binned per outcome, each training and validation slice was first copied out of the
    matrix (~0.8 GB at 100k visits) and then binned again: ~4 s an outcome. The bin
    boundaries come from a sample of the rows of the training period (the oldest
    ``shares[0]`` of the visits), as LightGBM sampled them from the training slice
    before: the visits the card is computed on do not shape the model.
    """
    src = ex.source
    params = cfg.params()
    key = ("lightgbm", json.dumps(params, sort_keys=True), cfg.shares[0], cfg.seed)
    matrix, full = src.derived.get(key, (None, None))
    if matrix is not src.X or full is None:  # (a copy made with other matrices: rebin)
        n = len(src.visit_ids)
        order = np.lexsort((np.arange(n), src.visit_started))
        training = np.zeros(n, dtype=bool)
        training[order[: round(cfg.shares[0] * n)]] = True
        rows = np.flatnonzero(training[src.visit])
        if len(rows) > BIN_SAMPLE_ROWS:
            rng = np.random.default_rng(cfg.seed)
            rows = np.sort(rng.choice(rows, BIN_SAMPLE_ROWS, replace=False))
        # LightGBM refuses ':' in feature names: it keeps positions, the card keeps names.
        bins = lgb.Dataset(src.X[rows], np.zeros(len(rows)), params=params)
        full = lgb.Dataset(src.X, np.zeros(len(src)), reference=bins, params=params)
        src.derived[key] = (src.X, full.construct())
    return full


def _rows_of(binned: lgb.Dataset, part: OutcomeExamples) -> lgb.Dataset:
    """The binned rows of ``part``, with its labels and weights."""
    rows = part.rows
    if np.any(rows[1:] <= rows[:-1]):  # LightGBM takes a subset's rows in ascending order
        raise ValueError("the examples' rows are expected in ascending order")
    out = binned.subset(rows.tolist()).construct()
    out.set_label(part.y)
    out.set_weight(part.weight)
    return out


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


@dataclass(slots=True)
class _Logistic:
    """The logistic regression fitted beside the trees: its test figures, its ROC AUC on
    the choice (calibration) slice, and what serving it takes."""

    figures: dict[str, Any]
    choice_auc: float
    scorer: LinearScorer
    calibrator: Calibrator
    test_p: np.ndarray
    seconds: float


def _logistic_baseline(parts: dict[str, OutcomeExamples], config: TrainingConfig) -> _Logistic:
    t = time.perf_counter()
    lr = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=300))
    tr = parts["train"]
    if len(tr) > config.baseline_rows:  # a baseline need not cost more than the model
        keep = np.random.default_rng(config.seed).choice(len(tr), config.baseline_rows, False)
        tr = tr.subset(np.sort(keep))
    cal, te = parts["calibration"], parts["test"]
    # Single precision halves the memory traffic of every pass L-BFGS makes over the rows,
    # which bounds the fit: a quarter less CPU; the baseline's AUC moved by 0.0000-0.0002
    # on 100k visits, up to 0.003 on 50k (L-BFGS reaches its tolerance by another path).
    # One BLAS thread: the boosting running beside it has the cores.
    with threadpool_limits(limits=1, user_api="blas"):
        lr.fit(tr.X.astype(np.float32), tr.y, logisticregression__sample_weight=tr.weight)
    # Served in double precision from the folded weights: what is evaluated is what serves.
    scorer = LinearScorer.from_pipeline(lr)
    raw_cal = scorer.raw_many(cal.X)
    calibrator, _ = choose_calibrator(raw_cal, cal.y, cal.visit, seed=config.seed)
    p = calibrator.many(scorer.raw_many(te.X))
    out = summary(p, te.y, te.prefix)
    out["calibration"] = type(calibrator).__name__.lower()
    out["trainedOnExamples"] = len(tr)
    return _Logistic(out, auc(raw_cal, cal.y), scorer, calibrator, p, time.perf_counter() - t)


def _fit(
    outcome: str,
    binned: lgb.Dataset,
    tr: OutcomeExamples,
    va: OutcomeExamples,
    cfg: TrainingConfig,
    progress: bool,
    extra: dict[str, Any] | None = None,
) -> tuple[str, int]:
    """The model early-stopped on ``va`` and cut at its best round (LightGBM's text
    format), and that round; ``extra`` parameters on top of the configuration's (those
    that do not change the binning)."""
    callbacks: list[Callable[..., None]] = [
        lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)
    ]
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"training {outcome}", total=cfg.max_rounds)

        def advance(env: Any) -> None:
            bar.update(task, completed=env.iteration + 1)

        callbacks.append(advance)
        booster = lgb.train(
            {**cfg.params(), **(extra or {})},
            _rows_of(binned, tr),
            num_boost_round=cfg.max_rounds,
            valid_sets=[_rows_of(binned, va)],
            valid_names=["validation"],
            callbacks=callbacks,
        )
    best = booster.best_iteration or booster.current_iteration()
    return booster.model_to_string(num_iteration=best), int(best)


def _data_card(ex: OutcomeExamples, parts: dict[str, OutcomeExamples]) -> dict[str, Any]:
    """The card's account of the data: counts overall and per split, label and weights."""
    return {
        **_counts(ex),
        "splits": {k: _counts(v) for k, v in parts.items()},
        "label": "achieved at a later event of the same visit",
        "weighting": "each visit weighs 1 in training (1 / its examples); "
        "figures count every test prefix once",
    }


@dataclass(slots=True)
class _Trees:
    """The boosted trees chosen on held-out visits, calibrated, and their test scores."""

    chosen: Selection
    booster: lgb.Booster
    calibrator: Calibrator
    calibrators: dict[str, Any]  # each method's out-of-fold ECE
    test_p: np.ndarray
    fit_s: float
    calibration_s: float


def _trees(
    ex: OutcomeExamples, parts: dict[str, OutcomeExamples], cfg: TrainingConfig, progress: bool
) -> _Trees:
    t0 = time.perf_counter()
    tr, va, ca, te = (parts[k] for k in SPLITS)
    binned = _binned(ex, cfg)
    chosen = select(
        lambda extra: _fit(ex.outcome, binned, tr, va, cfg, progress, extra),
        va.X,
        va.y,
        ca.X,
        ca.y,
        ex.spec.names,
        train_rows=len(tr),
        seed=cfg.seed,
        threads=cfg.num_threads,
    )
    final = lgb.Booster(model_str=chosen.model_text)
    t1 = time.perf_counter()
    calibrator, candidates = choose_calibrator(
        raw_scores(final, ca.X, cfg.num_threads), ca.y, ca.visit, seed=cfg.seed
    )
    t2 = time.perf_counter()
    test_p = calibrator.many(raw_scores(final, te.X, cfg.num_threads))
    return _Trees(chosen, final, calibrator, candidates, test_p, t1 - t0, t2 - t1)


def _choice(trees: _Trees, lg: _Logistic | None) -> tuple[bool, dict[str, Any]]:
    """Whether the logistic regression is served, and the card's account of the choice.

    Trees that do not beat a logistic regression on visits neither was fitted on would
    serve a worse answer than a formula: the logistic model is served then."""
    selection = trees.chosen.card()
    if lg is None:
        return False, selection
    linear = lg.choice_auc > trees.chosen.chosen_auc
    selection["candidates"].append(
        {"params": {"model": "logisticRegression"}, "rocAuc": lg.choice_auc}
    )
    selection["served"] = "logisticRegression" if linear else "gradientBoostedTrees"
    aucs = (lg.choice_auc, trees.chosen.chosen_auc)
    won, lost = aucs if linear else aucs[::-1]
    names = ("logistic regression", "boosted trees")
    winner, loser = names if linear else names[::-1]
    selection["why"] = (
        f"the {winner} ranked the calibration slice's visits better than the {loser} "
        f"(ROC AUC {won:.3f} vs {lost:.3f})"
    )
    return linear, selection


def _test_figures(p: np.ndarray, te: OutcomeExamples) -> dict[str, Any]:
    test = summary(p, te.y, te.prefix)
    test["reliability"] = reliability(p, te.y)
    test["liftByDecile"] = lift_by_decile(p, te.y)
    test["latest"] = latest_slice(p, te.y, te.visit, te.started)
    return test


def _served(
    linear: bool,
    lg: _Logistic | None,
    trees: _Trees,
    tr: OutcomeExamples,
    names: list[str],
    params: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]], Calibrator, dict[str, Any]]:
    """The served model's card entry, top features, calibrator and calibration entry."""
    if linear and lg is not None:
        spread = tr.X.std(axis=0)
        ranked = sorted(lg.scorer.weights(names, spread), key=lambda kv: -kv[1])[:15]
        model = {
            "kind": "logisticRegression",
            "library": f"scikit-learn {sklearn.__version__}",
            "params": {"C": 1.0, "penalty": "l2", "standardised": True},
            "features": sum(1 for c in lg.scorer.coef if c != 0.0),
        }
        top = [{"feature": n, "weight": round(w, 4)} for n, w in ranked if w > 0]
        return model, top, lg.calibrator, {"method": lg.figures["calibration"]}
    gains = trees.booster.feature_importance("gain")
    ranked = sorted(zip(names, gains.tolist(), strict=True), key=lambda kv: -kv[1])[:15]
    model = {
        "kind": "lightgbm",
        "version": lgb.__version__,
        "trees": trees.chosen.rounds,
        "params": params,
    }
    top = [{"feature": n, "gain": round(g, 3)} for n, g in ranked if g > 0]
    method = type(trees.calibrator).__name__.lower()
    return model, top, trees.calibrator, {"method": method, "outOfFoldEce": trees.calibrators}


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
    tr, te = parts["train"], parts["test"]
    names = ex.spec.names
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline") as pool:
        # The baseline does not depend on the model: it runs beside the boosting, whose
        # rounds (LightGBM's C++) release the GIL, so a core idle between LightGBM's
        # parallel sections fits the logistic regression meanwhile.
        logistic = pool.submit(_logistic_baseline, parts, cfg) if cfg.baselines else None
        trees = _trees(ex, parts, cfg, progress)
        lg = logistic.result() if logistic is not None else None
    linear, selection = _choice(trees, lg)
    p = lg.test_p if linear and lg is not None else trees.test_p
    maxima = visit_maxima(p, te.visit)
    baselines: dict[str, Any] = {}
    if lg is not None:
        base = float(tr.y.mean())
        baselines["baseRate"] = summary(np.full(len(te), base), te.y)
        baselines["baseRate"]["rate"] = base
        baselines["logisticRegression"] = lg.figures
        if linear:
            baselines["gradientBoostedTrees"] = summary(trees.test_p, te.y, te.prefix)
    params = {**cfg.params(), **selection["chosen"]}
    model_card, top, calibrator, calibration = _served(linear, lg, trees, tr, names, params)
    at = now_ms if now_ms is not None else time.time() * 1000
    card: dict[str, Any] = {
        "outcome": ex.outcome,
        "trainedAt": _iso(at),
        "trainedAtMs": int(at),
        "data": _data_card(ex, parts),
        "model": model_card,
        "selection": selection,
        "features": names,
        "featureSpec": ex.spec.to_json(),
        "topFeatures": top,
        "calibration": calibration,
        "test": _test_figures(p, te),
        "baselines": baselines,
        "trainingSeconds": {
            "fit": round(trees.fit_s, 3),
            "calibration": round(trees.calibration_s, 3),
            "baselines": round(lg.seconds if lg is not None else 0.0, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
        "referenceMax": downsample_sorted(maxima, cfg.reference_points),
        "referenceVisits": len(maxima),
    }
    if linear and lg is not None:
        return TrainedModel(ex.outcome, ex.spec, "", calibrator, card, te, p, None, lg.scorer)
    text = trees.chosen.model_text
    return TrainedModel(ex.outcome, ex.spec, text, calibrator, card, te, p, trees.booster)


def latest_slice(
    p: np.ndarray,
    y: np.ndarray,
    visit: np.ndarray,
    started: np.ndarray,
    share: float = LATEST_SHARE,
) -> dict[str, Any]:
    """Calibration on the newest ``share`` of the visits (``visit``: each example's visit,
    ``started``: its visit's start): drift shows here first, where the figures of a whole
    slice average it away.

    >>> visit = np.repeat(np.arange(8), 2); started = visit * 1000
    >>> y = np.r_[np.zeros(12), np.ones(4)]
    >>> out = latest_slice(np.full(16, 0.5), y, visit, started)
    >>> out["visits"], out["meanPredicted"], out["baseRate"]
    (2, 0.5, 1.0)
    """
    first = np.full(int(visit.max()) + 1 if len(visit) else 0, np.iinfo(np.int64).max)
    np.minimum.at(first, visit, started)
    visits = np.unique(visit)
    order = visits[np.argsort(first[visits], kind="stable")]
    newest = order[int(np.floor(len(order) * (1 - share))) :]
    rows = np.isin(visit, newest)
    part = summary(p[rows], y[rows])
    return {
        "visits": len(newest),
        "examples": int(rows.sum()),
        "from": _iso(int(first[newest].min())) if len(newest) else None,
        "meanPredicted": part["meanPredicted"],
        "baseRate": part["baseRate"],
        "ece": part.get("ece"),
    }


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
    trees = card.get("baselines", {}).get("gradientBoostedTrees")
    if trees:
        text += f"; a logistic regression, the trees' AUC {f(trees['rocAuc'])}"
    elif lr:
        text += f"; logistic regression AUC {f(lr['rocAuc'])}"
    return text
