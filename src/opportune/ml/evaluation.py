"""Model metrics shared by the outcome and routing models: discrimination (AUC),
calibration (expected calibration error, calibration table), accuracy (Brier, log loss,
RMSE). Arrays in, floats out; undefined cases (one class only) give ``nan``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_EPS = 1e-12


def auc(y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve; ``nan`` when ``y`` holds one class only."""
    labels = np.asarray(y)
    if len(np.unique(labels)) < 2:
        return math.nan
    from sklearn.metrics import roc_auc_score  # evaluation only: serving never calls this

    return float(roc_auc_score(labels, np.asarray(p)))


def brier(y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray) -> float:
    """Mean squared error of probabilities; ``nan`` on no rows.

    >>> brier([0, 1], [0.0, 0.5]), brier([], [])
    (0.125, nan)
    """
    yy, pp = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    return float(np.mean((pp - yy) ** 2)) if len(yy) else math.nan


def log_loss(y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray) -> float:
    yy = np.asarray(y, dtype=float)
    pp = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return float(-np.mean(yy * np.log(pp) + (1 - yy) * np.log(1 - pp))) if len(yy) else math.nan


def rmse(y: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> float:
    """Root mean squared error of amounts.

    >>> rmse([1, 3], [2, 2])
    1.0
    """
    yy, pp = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    return float(np.sqrt(np.mean((pp - yy) ** 2))) if len(yy) else math.nan


def calibration_table(
    y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray, bins: int = 10
) -> list[tuple[float, float, int]]:
    """Per quantile bin of ``p``: (mean predicted, observed rate, count)."""
    yy, pp = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if not len(yy):
        return []
    order = np.argsort(pp, kind="stable")
    out = []
    for chunk in np.array_split(order, min(bins, len(yy))):
        if len(chunk):
            out.append((float(pp[chunk].mean()), float(yy[chunk].mean()), len(chunk)))
    return out


def ece(y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-count bins: Σ (n_b / n) |mean p_b − rate_b|."""
    table = calibration_table(y, p, bins)
    n = sum(c for _, _, c in table)
    return sum(c / n * abs(m - r) for m, r, c in table) if n else math.nan
