"""Model metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from opportune.ml.evaluation import auc, brier, calibration_table, ece, log_loss, rmse


def test_auc_by_hand() -> None:
    # Positives 0.8, 0.4; negatives 0.6, 0.2: 3 of 4 pairs ordered right.
    assert auc([1, 0, 1, 0], [0.8, 0.6, 0.4, 0.2]) == pytest.approx(0.75)
    assert auc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    assert math.isnan(auc([1, 1], [0.3, 0.4]))


def test_brier_log_loss_rmse_by_hand() -> None:
    y, p = [1, 0], [0.8, 0.4]
    assert brier(y, p) == pytest.approx((0.04 + 0.16) / 2)
    assert log_loss(y, p) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert rmse([1.0, 3.0], [2.0, 1.0]) == pytest.approx(math.sqrt(2.5))


def test_calibration_error_is_zero_when_calibrated_and_positive_when_not() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.6, 200_000)
    y = (rng.random(len(p)) < p).astype(float)
    assert ece(y, p) < 0.005
    assert ece(y, np.clip(p * 1.5, 0, 1)) > 0.08
    table = calibration_table(y, p, bins=5)
    assert len(table) == 5 and sum(c for _, _, c in table) == len(p)
    assert all(abs(m - r) < 0.01 for m, r, _ in table)
