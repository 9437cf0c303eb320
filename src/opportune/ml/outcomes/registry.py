"""Versioned outcome models on disk (``<data_dir>/models/<outcome>/vN/``), the model that
serves, and the activation rule.

A version holds ``model.txt`` (LightGBM) or ``model.json`` (a logistic regression that
ranked held-out visits better than the trees), ``calibrator.json``, ``spec.json`` (the feature
layout), ``card.json`` and ``reliability.svg``; versions, activation and rollback are the
shared :class:`~opportune.ml.registry.VersionRegistry`. Activation follows one rule
(:func:`not_worse`): a new model becomes active only if it is not worse than the active one
on the new model's own test visits — the most recent ones.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

from opportune.ml.booster import RowPredictor, raw_scores
from opportune.ml.calibration import Calibrator, calibrator_from_json, reliability_svg
from opportune.ml.outcomes.features import FeatureSpec
from opportune.ml.outcomes.linear import LinearScorer
from opportune.ml.registry import VersionRegistry

if TYPE_CHECKING:
    from opportune.ml.outcomes.model import TrainedModel

# "Not worse": ROC AUC at most this much lower, and Brier at most this share higher.
AUC_TOLERANCE = 0.005
BRIER_TOLERANCE = 0.02


def not_worse(
    new: Mapping[str, float | None],
    active: Mapping[str, float | None],
    *,
    auc_tolerance: float = AUC_TOLERANCE,
    brier_tolerance: float = BRIER_TOLERANCE,
) -> tuple[bool, str]:
    """Whether a new model may replace the active one, both scored on the same test
    prefixes: ROC AUC no more than ``auc_tolerance`` lower *and* Brier score no more than
    ``brier_tolerance`` (relative) higher. The tolerances absorb the noise of retraining on
    a window that moved by a day; a model that ranks or calibrates clearly worse stays out.

    >>> not_worse({"rocAuc": 0.80, "brier": 0.050}, {"rocAuc": 0.802, "brier": 0.0505})
    (True, 'not worse: ROC AUC 0.8000 vs 0.8020, Brier 0.05000 vs 0.05050')
    >>> not_worse({"rocAuc": 0.70, "brier": 0.050}, {"rocAuc": 0.80, "brier": 0.050})[0]
    False
    """
    na, oa, nb, ob = new.get("rocAuc"), active.get("rocAuc"), new.get("brier"), active.get("brier")
    if na is None or nb is None:
        return False, "the new model has no ROC AUC or Brier score on its test data"
    if oa is None or ob is None:
        return True, "the active model could not be scored on the new test data"
    figures = f"ROC AUC {na:.4f} vs {oa:.4f}, Brier {nb:.5f} vs {ob:.5f}"
    if na < oa - auc_tolerance:
        return False, f"worse ranking: {figures}"
    if nb > ob * (1 + brier_tolerance):
        return False, f"worse Brier score: {figures}"
    return True, f"not worse: {figures}"


class LoadedModel:
    """A registered model ready to serve: the interface the pipeline's scorer calls.

    ``predict_one`` is the hot path (LightGBM's single-row C entry point, then the
    calibrator: ~20 µs); ``contributions`` explains a score (SHAP values on the log-odds
    scale, from LightGBM's ``pred_contrib``); ``quantile`` places a probability among the
    maximum probabilities of the model's test visits (``reference_max``, sorted).
    """

    def __init__(
        self,
        outcome: str,
        version: str,
        spec: FeatureSpec,
        card: dict[str, Any],
        model_text: str,
        calibrator: Calibrator,
        linear: LinearScorer | None = None,
    ) -> None:
        self.outcome = outcome
        self.version = version
        self.spec = spec
        self.card = card
        self.reference_max: list[float] = sorted(float(v) for v in card.get("referenceMax", ()))
        self.calibrator = calibrator
        self._names = spec.names
        self._model_text = model_text
        self._linear = linear
        self._row: Callable[[list[float]], float] = (
            linear.raw_one if linear is not None else RowPredictor(model_text, len(self._names))
        )
        self._booster: lgb.Booster | None = None

    @classmethod
    def from_dir(cls, outcome: str, version: str, path: Path) -> LoadedModel:
        spec = FeatureSpec.from_json(json.loads((path / "spec.json").read_text("utf-8")))
        card = json.loads((path / "card.json").read_text("utf-8"))
        calibrator = calibrator_from_json(json.loads((path / "calibrator.json").read_text("utf-8")))
        if (path / "model.json").exists():  # a logistic regression won the choice
            linear = LinearScorer.from_json(json.loads((path / "model.json").read_text("utf-8")))
            return cls(outcome, version, spec, card, "", calibrator, linear)
        text = (path / "model.txt").read_text("utf-8")
        return cls(outcome, version, spec, card, text, calibrator)

    @property
    def booster(self) -> lgb.Booster:
        if self._booster is None:
            self._booster = lgb.Booster(model_str=self._model_text)
        return self._booster

    def predict_raw_one(self, x: list[float]) -> float:
        """The model's raw score (log-odds, before calibration) for one feature vector."""
        return self._row(x)

    def predict_one(self, x: list[float]) -> float:
        """The calibrated probability for one feature vector (``spec``'s layout)."""
        return self.calibrator(self._row(x))

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of many rows at once (evaluation, not the hot path)."""
        X = np.asarray(X, dtype=np.float64)
        if self._linear is not None:
            return self.calibrator.many(self._linear.raw_many(X))
        return self.calibrator.many(raw_scores(self.booster, X))

    def contributions(self, x: list[float], top: int = 5) -> list[tuple[str, float]]:
        """The ``top`` features moving this score most, with their contributions to the
        log-odds (positive: towards the outcome), largest in absolute value first."""
        if self._linear is not None:
            return self._linear.contributions(x, self._names, top)
        row = np.asarray([x], dtype=np.float64)
        contrib = self.booster.predict(row, pred_contrib=True, num_threads=1)[0][:-1]
        order = np.argsort(-np.abs(contrib), kind="stable")[:top]
        return [(self._names[i], float(contrib[i])) for i in order]

    def quantile(self, p: float) -> float:
        """The share of reference visits whose maximum probability is lower than ``p``."""
        ref = self.reference_max
        if not ref:
            return 0.0
        return bisect_left(ref, p) / len(ref)


class ModelRegistry(VersionRegistry):
    """Models of every outcome under ``root`` (``<data_dir>/models``)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._cache: dict[tuple[str, str], LoadedModel] = {}

    def outcomes(self) -> list[str]:
        """Outcomes with at least one saved version."""
        return self.names()

    def load(self, outcome: str, version: str) -> LoadedModel:
        key = (outcome, version)
        model = self._cache.get(key)
        if model is None:
            model = LoadedModel.from_dir(outcome, version, self._version_dir(outcome, version))
            self._cache[key] = model
        return model

    def load_active(self, outcome: str) -> LoadedModel | None:
        """The active model of ``outcome`` (cached per version), or None."""
        version = self.active_version(outcome)
        if version is None:
            return None
        return self.load(outcome, version)

    def active_models(self, outcomes: list[str] | None = None) -> dict[str, LoadedModel]:
        """Every active model (or those of ``outcomes``), by outcome: what serving loads."""
        out = {}
        for outcome in self.outcomes() if outcomes is None else outcomes:
            model = self.load_active(outcome)
            if model is not None:
                out[outcome] = model
        return out

    def save(self, outcome: str, trained: TrainedModel) -> str:
        """Write ``trained`` as the next version of ``outcome`` (not activated); its card
        gets the version, and a reliability plot is written beside it."""

        def files(version: str) -> dict[str, str]:
            card = {**trained.card, "version": version}
            bins = card.get("test", {}).get("reliability", [])
            title = f"{outcome} {version}: reliability on the test visits"
            model = (
                {"model.json": json.dumps(trained.linear.to_json())}
                if trained.linear is not None
                else {"model.txt": trained.model_text}
            )
            return {
                **model,
                "calibrator.json": json.dumps(trained.calibrator.to_json()),
                "spec.json": json.dumps(trained.spec.to_json()),
                "card.json": json.dumps(card, indent=1),
                "reliability.svg": reliability_svg(bins, title),
            }

        return self.save_version(outcome, files)


__all__ = [
    "AUC_TOLERANCE",
    "BRIER_TOLERANCE",
    "LoadedModel",
    "ModelRegistry",
    "not_worse",
]
