"""Versioned outcome models on disk, the active one per outcome, and rollback.

Layout under ``<data_dir>/models``::

    <outcome>/
      v1/ model.txt  calibrator.json  spec.json  card.json  reliability.svg
      v2/ ...
      active         the active version's name ("v2"), replaced atomically
      history.json   {"stack": [versions activated, oldest first], "log": [...]}

A version directory is written whole under a temporary name and renamed into place, so a
reader never sees half a model; ``active`` is replaced with ``os.replace``. Activation
follows one rule (:func:`not_worse`): a new model becomes active only if it is not worse
than the active one on the new model's own test visits — the most recent ones; a version
that failed that check is activated only by hand with ``force``. Rollback re-activates the
version that was active before the current one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

from opportune.ml.booster import RowPredictor, raw_scores
from opportune.ml.calibration import Calibrator, calibrator_from_json, reliability_svg
from opportune.ml.features import FeatureSpec

if TYPE_CHECKING:
    from opportune.ml.outcome_model import TrainedModel

# "Not worse": ROC AUC at most this much lower, and Brier at most this share higher.
AUC_TOLERANCE = 0.005
BRIER_TOLERANCE = 0.02
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_VERSION = re.compile(r"^v([1-9][0-9]*)$")


class RegistryError(Exception):
    """A request the registry cannot carry out (unknown outcome or version, nothing to
    roll back to); the message says which."""


class ActivationRefused(RegistryError):
    """The version failed the activation check when it was trained; ``force`` overrides."""


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
    ) -> None:
        self.outcome = outcome
        self.version = version
        self.spec = spec
        self.card = card
        self.reference_max: list[float] = sorted(float(v) for v in card.get("referenceMax", ()))
        self.calibrator = calibrator
        self._names = spec.names
        self._model_text = model_text
        self._row = RowPredictor(model_text, len(self._names))
        self._booster: lgb.Booster | None = None

    @classmethod
    def from_dir(cls, outcome: str, version: str, path: Path) -> LoadedModel:
        spec = FeatureSpec.from_json(json.loads((path / "spec.json").read_text("utf-8")))
        card = json.loads((path / "card.json").read_text("utf-8"))
        calibrator = calibrator_from_json(json.loads((path / "calibrator.json").read_text("utf-8")))
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
        return self.calibrator.many(raw_scores(self.booster, np.asarray(X, dtype=np.float64)))

    def contributions(self, x: list[float], top: int = 5) -> list[tuple[str, float]]:
        """The ``top`` features moving this score most, with their contributions to the
        log-odds (positive: towards the outcome), largest in absolute value first."""
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


def _iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


class ModelRegistry:
    """Models of every outcome under ``root`` (``<data_dir>/models``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache: dict[tuple[str, str], LoadedModel] = {}

    # -- reading -----------------------------------------------------------------------

    def _dir(self, outcome: str) -> Path:
        if not _NAME.match(outcome):
            raise RegistryError(f"{outcome!r} is not an outcome name")
        return self.root / outcome

    def outcomes(self) -> list[str]:
        """Outcomes with at least one saved version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _NAME.match(p.name) and p.is_dir())

    def versions(self, outcome: str) -> list[str]:
        """Saved versions of ``outcome``, oldest first."""
        d = self._dir(outcome)
        if not d.is_dir():
            return []
        found = [
            (int(m.group(1)), p.name)
            for p in d.iterdir()
            if (m := _VERSION.match(p.name)) and (p / "card.json").is_file()
        ]
        return [name for _, name in sorted(found)]

    def active_version(self, outcome: str) -> str | None:
        try:
            text = (self._dir(outcome) / "active").read_text("utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def card(self, outcome: str, version: str) -> dict[str, Any]:
        path = self._version_dir(outcome, version) / "card.json"
        data: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return data

    def last_trained_at(self, outcome: str) -> int | None:
        """When the newest version of ``outcome`` was trained (ms), or None."""
        versions = self.versions(outcome)
        if not versions:
            return None
        return int(self.card(outcome, versions[-1]).get("trainedAtMs") or 0) or None

    def history(self, outcome: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(
                (self._dir(outcome) / "history.json").read_text("utf-8")
            )
        except FileNotFoundError:
            return {"stack": [], "log": []}
        return data

    def _version_dir(self, outcome: str, version: str) -> Path:
        if not _VERSION.match(version):
            raise RegistryError(f"{version!r} is not a version (v1, v2, ...)")
        path = self._dir(outcome) / version
        if not (path / "card.json").is_file():
            raise RegistryError(f"{outcome} has no version {version}")
        return path

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

    # -- writing -----------------------------------------------------------------------

    def save(self, outcome: str, trained: TrainedModel) -> str:
        """Write ``trained`` as the next version of ``outcome`` (not activated); its card
        gets the version, and a reliability plot is written beside it."""
        d = self._dir(outcome)
        d.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=d))
        try:
            while True:
                versions = self.versions(outcome)
                n = int(versions[-1][1:]) + 1 if versions else 1
                version = f"v{n}"
                card = {**trained.card, "version": version}
                (tmp / "model.txt").write_text(trained.model_text, "utf-8")
                (tmp / "calibrator.json").write_text(
                    json.dumps(trained.calibrator.to_json()), "utf-8"
                )
                (tmp / "spec.json").write_text(json.dumps(trained.spec.to_json()), "utf-8")
                (tmp / "card.json").write_text(json.dumps(card, indent=1), "utf-8")
                bins = card.get("test", {}).get("reliability", [])
                title = f"{outcome} {version}: reliability on the test visits"
                (tmp / "reliability.svg").write_text(reliability_svg(bins, title), "utf-8")
                try:
                    os.rename(tmp, d / version)  # fails if another process took the name
                except OSError:
                    if (d / version).exists():
                        continue
                    raise
                return version
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def activate(
        self,
        outcome: str,
        version: str,
        *,
        force: bool = False,
        by: str = "hand",
        now_ms: float | None = None,
    ) -> None:
        """Make ``version`` the active model of ``outcome``.

        A version whose activation check failed when it was trained (it was worse than
        the model then active) is refused unless ``force``.
        """
        card = self.card(outcome, version)
        check = card.get("activation") or {}
        if check.get("notWorse") is False and not force:
            raise ActivationRefused(
                f"{outcome} {version} was worse than {check.get('comparedWith')} when trained "
                f"({check.get('reason')}); activate it with force to override"
            )
        hist = self.history(outcome)
        if not hist["stack"] or hist["stack"][-1] != version:
            hist["stack"].append(version)
        self._log(hist, "activate", version, "force" if force else by, now_ms)
        self._write_active(outcome, version, hist)

    def rollback(self, outcome: str, *, now_ms: float | None = None) -> str:
        """Re-activate the version active before the current one; return its name."""
        hist = self.history(outcome)
        stack = hist["stack"]
        current = self.active_version(outcome)
        if current is not None and stack and stack[-1] == current:
            stack.pop()
        while stack and not (self._dir(outcome) / stack[-1] / "card.json").is_file():
            stack.pop()
        if not stack:
            raise RegistryError(f"{outcome} has no earlier active version to roll back to")
        version = str(stack[-1])
        self._log(hist, "rollback", version, "hand", now_ms)
        self._write_active(outcome, version, hist)
        return version

    @staticmethod
    def _log(
        hist: dict[str, Any], action: str, version: str, by: str, now_ms: float | None
    ) -> None:
        at = time.time() * 1000 if now_ms is None else now_ms
        hist["log"].append({"at": _iso(at), "action": action, "version": version, "by": by})

    def _write_active(self, outcome: str, version: str, hist: dict[str, Any]) -> None:
        d = self._dir(outcome)
        for name, text in (("history.json", json.dumps(hist, indent=1)), ("active", version)):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=d)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, d / name)

    @contextlib.contextmanager
    def training_lock(self) -> Iterator[bool]:
        """An exclusive, non-blocking lock on this registry across processes: yields
        whether it was taken (released on exit, or when the process dies)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".training.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
