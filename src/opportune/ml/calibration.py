"""Calibration and the figures of a model card: calibrators (isotonic, Platt), expected
calibration error with its reliability bins, lift by decile, AUC by prefix length, and a
small hand-written SVG reliability plot (no plotting library is a dependency).

Calibrators map a model's raw score (log-odds) to a probability. Each has a scalar path
for serving (a few hundred nanoseconds, no numpy) and a vectorised one for evaluation; the
two agree exactly (tests check it).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

ECE_BINS = 20
PREFIX_LENGTHS = (1, 3, 5, 10)


@dataclass(frozen=True, slots=True)
class Isotonic:
    """A monotone step-wise-linear map from raw score to probability (sklearn's fit)."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __call__(self, raw: float) -> float:
        xs, ys = self.x, self.y
        i = bisect_right(xs, raw)
        if i == 0:
            return ys[0]
        if i == len(xs):
            return ys[-1]
        x0, x1 = xs[i - 1], xs[i]
        return ys[i - 1] + (ys[i] - ys[i - 1]) * (raw - x0) / (x1 - x0)

    def many(self, raw: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.interp(raw, self.x, self.y)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": "isotonic", "x": list(self.x), "y": list(self.y)}


@dataclass(frozen=True, slots=True)
class Platt:
    """Logistic calibration of a raw score.

    >>> cal = calibrator_from_json(Platt(1.0, 0.0).to_json())
    >>> round(cal(0.0), 3), cal.many(np.array([0.0])).round(3).tolist()
    (0.5, [0.5])
    """

    """A logistic map ``1 / (1 + exp(-(a * raw + b)))`` (Platt scaling)."""

    a: float
    b: float

    def __call__(self, raw: float) -> float:
        z = self.a * raw + self.b
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def many(self, raw: np.ndarray) -> np.ndarray:
        z = self.a * np.asarray(raw, dtype=np.float64) + self.b
        out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic, overflow-free
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": "platt", "a": self.a, "b": self.b}


Calibrator = Isotonic | Platt


def calibrator_from_json(data: dict[str, Any]) -> Calibrator:
    """A calibrator saved with ``to_json``; a clear error for anything else."""
    kind = data.get("kind")
    if kind == "isotonic":
        return Isotonic(tuple(float(v) for v in data["x"]), tuple(float(v) for v in data["y"]))
    if kind == "platt":
        return Platt(float(data["a"]), float(data["b"]))
    raise ValueError(f"unknown calibrator kind {kind!r} (expected isotonic or platt)")


def fit_isotonic(raw: np.ndarray, y: np.ndarray) -> Isotonic:
    """Centred isotonic regression (Oron and Flournoy, 2017): the pool-adjacent-violators
    fit, with each flat run replaced by one knot at its middle and straight lines between.
    Plain isotonic regression is a staircase: every raw score on a step gets the same
    probability, so a model served a few dozen distinct values and a visitor's score stood
    still while their journey changed; the centred fit is strictly increasing between knots
    and keeps the fit's calibration.

    >>> cal = fit_isotonic(np.array([0.0, 1, 2, 3, 4, 5]), np.array([0, 0, 1, 0, 1, 1]))
    >>> [round(cal(v), 3) for v in (0.0, 1.0, 2.5, 4.0, 5.0)]
    [0.0, 0.2, 0.5, 0.8, 1.0]
    """
    from sklearn.isotonic import IsotonicRegression  # fitting only: serving needs none

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(raw, y)
    xs, ys = iso.X_thresholds_, iso.y_thresholds_
    knots_x: list[float] = []
    knots_y: list[float] = []
    start = 0
    for i in range(1, len(xs) + 1):
        if i == len(xs) or ys[i] != ys[start]:
            knots_x.append(float((xs[start] + xs[i - 1]) / 2))
            knots_y.append(float(ys[start]))
            start = i
    if len(knots_x) == 1:  # one flat run: a constant
        return Isotonic((float(xs[0]),), (knots_y[0],))
    # The ends keep the fit's extreme values out to the data's range.
    knots_x[0], knots_x[-1] = float(xs[0]), float(xs[-1])
    return Isotonic(tuple(knots_x), tuple(knots_y))


def fit_platt(raw: np.ndarray, y: np.ndarray) -> Platt:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(np.asarray(raw, dtype=np.float64).reshape(-1, 1), y)
    return Platt(float(lr.coef_[0, 0]), float(lr.intercept_[0]))


FITTERS: dict[str, Callable[[np.ndarray, np.ndarray], Calibrator]] = {
    "isotonic": fit_isotonic,
    "platt": fit_platt,
}


def choose_calibrator(
    raw: np.ndarray, y: np.ndarray, groups: np.ndarray, *, folds: int = 3, seed: int = 0
) -> tuple[Calibrator, dict[str, float]]:
    """Isotonic or Platt, whichever has the lower ECE out of fold (folds by visit, so one
    visit's prefixes never sit on both sides), refitted on all of ``raw``.

    Judging on the slice each was fitted on would always favour isotonic (it can follow
    noise); out of fold, Platt wins when the slice is small or the score already ranks
    smoothly. Returns the calibrator and each method's out-of-fold ECE.
    """
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(uniq.tolist(), rng.integers(0, folds, len(uniq)).tolist(), strict=True))
    fold = np.array([fold_of[g] for g in groups.tolist()])
    scores: dict[str, float] = {}
    for name, fit in FITTERS.items():
        pred = np.empty(len(raw))
        for k in range(folds):
            test = fold == k
            train = ~test
            if not test.any():
                continue
            if len(np.unique(y[train])) < 2:
                pred[test] = float(np.mean(y[train])) if train.any() else 0.0
                continue
            pred[test] = fit(raw[train], y[train]).many(raw[test])
        scores[name] = ece(pred, y)
    best = min(scores, key=lambda k: scores[k])
    return FITTERS[best](raw, y), scores


# ---- figures -----------------------------------------------------------------------------


def _equal_mass(p: np.ndarray, bins: int) -> list[np.ndarray]:
    order = np.argsort(p, kind="stable")
    return [b for b in np.array_split(order, min(bins, len(p))) if len(b)]


def reliability(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Equal-count bins of the predictions: range, mean predicted, share observed, count."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = []
    for idx in _equal_mass(p, bins):
        out.append(
            {
                "lo": float(p[idx].min()),
                "hi": float(p[idx].max()),
                "predicted": float(p[idx].mean()),
                "observed": float(y[idx].mean()),
                "count": len(idx),
            }
        )
    return out


def ece(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over equal-count bins: the count-weighted mean gap
    between mean prediction and observed share. Equal-count (not equal-width) bins, because
    rare outcomes put most predictions near zero, where equal-width bins see one bin."""
    n = len(p)
    if n == 0:
        return float("nan")
    return float(
        sum(abs(b["predicted"] - b["observed"]) * b["count"] for b in reliability(p, y, bins)) / n
    )


def lift_by_decile(p: np.ndarray, y: np.ndarray) -> list[dict[str, float]]:
    """Deciles by predicted probability, highest first: positive share, lift over the base
    rate, and the cumulative share of all positives captured down to this decile."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    base = float(y.mean()) if len(y) else 0.0
    total = float(y.sum())
    order = np.argsort(-p, kind="stable")
    out = []
    captured = 0.0
    for d, idx in enumerate(np.array_split(order, 10), start=1):
        if not len(idx):
            continue
        hits = float(y[idx].sum())
        captured += hits
        rate = hits / len(idx)
        out.append(
            {
                "decile": d,
                "count": len(idx),
                "meanPredicted": float(p[idx].mean()),
                "rate": rate,
                "lift": rate / base if base else 0.0,
                "cumulativeCapture": captured / total if total else 0.0,
            }
        )
    return out


def safe_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC, or None when only one class is present (it is undefined then)."""
    if len(y) == 0 or np.all(y == y[0]):
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def auc_by_prefix(
    p: np.ndarray, y: np.ndarray, prefix: np.ndarray, lengths: Sequence[int] = PREFIX_LENGTHS
) -> dict[str, float | None]:
    """ROC AUC over the prefixes of exactly ``n`` events, for each ``n`` in ``lengths``."""
    return {str(n): safe_auc(y[prefix == n], p[prefix == n]) for n in lengths}


def summary(p: np.ndarray, y: np.ndarray, prefix: np.ndarray | None = None) -> dict[str, Any]:
    """The headline figures of probabilities ``p`` against labels ``y``."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(y, dtype=np.float64)
    two = len(np.unique(y)) == 2
    out: dict[str, Any] = {
        "examples": len(y),
        "positives": int(y.sum()),
        "baseRate": float(y.mean()) if len(y) else 0.0,
        "meanPredicted": float(p.mean()) if len(p) else 0.0,
        "rocAuc": float(roc_auc_score(y, p)) if two else None,
        "prAuc": float(average_precision_score(y, p)) if two else None,
        "brier": float(brier_score_loss(y, p)) if len(y) else None,
        "logLoss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))
        if len(y)
        else None,
        "ece": ece(p, y),
    }
    if prefix is not None:
        out["aucByPrefix"] = auc_by_prefix(p, y, prefix)
    return out


def reliability_svg(bins: Sequence[dict[str, float]], title: str) -> str:
    """A reliability diagram as a standalone SVG: observed share against mean predicted
    probability per bin (area ∝ count), the diagonal being perfect calibration. The axes
    span up to the largest value seen, so a rare outcome's curve is not a dot in a corner."""
    w, h, m = 420, 420, 56
    top = max([0.05, *(b["predicted"] for b in bins), *(b["observed"] for b in bins)])
    top = min(1.0, math.ceil(top * 20) / 20)
    span = w - 2 * m

    def sx(v: float) -> float:
        return m + span * v / top

    def sy(v: float) -> float:
        return h - m - span * v / top

    most = max([1, *(int(b["count"]) for b in bins)])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="13">{escape(title)}</text>',
        f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(top)}" y2="{sy(top)}" stroke="#bbb" '
        'stroke-dasharray="4 3"/>',
        f'<rect x="{m}" y="{m}" width="{span}" height="{span}" fill="none" stroke="#444"/>',
    ]
    for k in range(5):
        v = top * k / 4
        parts.append(
            f'<text x="{sx(v)}" y="{h - m + 16}" text-anchor="middle">{v:.3g}</text>'
            f'<text x="{m - 6}" y="{sy(v) + 4}" text-anchor="end">{v:.3g}</text>'
        )
    parts.append(
        f'<text x="{w / 2}" y="{h - 14}" text-anchor="middle">mean predicted probability</text>'
        f'<text x="16" y="{h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {h / 2})">observed share</text>'
    )
    pts = " ".join(f"{sx(b['predicted']):.1f},{sy(b['observed']):.1f}" for b in bins)
    if pts:
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#4c78a8" stroke-width="1.5"/>')
    for b in bins:
        r = 2.0 + 5.0 * math.sqrt(b["count"] / most)
        parts.append(
            f'<circle cx="{sx(b["predicted"]):.1f}" cy="{sy(b["observed"]):.1f}" r="{r:.1f}" '
            f'fill="#4c78a8" fill-opacity="0.7"><title>predicted {b["predicted"]:.4f}, '
            f"observed {b['observed']:.4f}, {int(b['count'])} examples</title></circle>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
