"""Outcome scores in the live pipeline: the active model of each scoring-enabled outcome,
run through the rules step's scorer hook on every event of the current visit.

Per visit and outcome the journey keeps a ``core.scores.Scores`` (probability, visit max,
quantile, visit-max quantile); the quantile is the share of recent visits (the model's test
visits) whose maximum probability is lower. Models are picked up from the registry when a new one is
activated (``refresh``), without a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from opportune.core.journey import Journey
from opportune.core.scores import rescored
from opportune.engine.metrics import SCORING_SECONDS
from opportune.ml.booster import PackedRow
from opportune.ml.outcomes.features import FeatureSpec, vector

log = logging.getLogger(__name__)


class Model(Protocol):
    """What serving needs of a trained outcome model (``ml.registry.LoadedModel``)."""

    outcome: str
    version: str
    spec: FeatureSpec
    card: dict[str, Any]

    def predict_one(self, x: list[float]) -> float: ...

    def contributions(self, x: list[float], top: int = 5) -> list[tuple[str, float]]: ...

    def quantile(self, p: float) -> float: ...


class OutcomeScorer:
    """Scores a journey in place for every outcome that has an active model."""

    def __init__(
        self,
        load: Callable[[], Mapping[str, Model]] | None = None,
        versions: Callable[[], Mapping[str, str | None]] | None = None,
    ) -> None:
        """``load`` gives the active models; ``versions`` (cheap) the active version of
        each outcome, so ``refresh`` reloads only when one changed."""
        self._load = load
        self._versions = versions
        self._seen: dict[str, str | None] = {}
        self.errors = 0
        # Per model, in order, the index of its feature layout among the distinct ones:
        # equal specs share one vector, found without hashing a spec on every event.
        self._plan: list[tuple[str, Model, int]] = []
        self._specs: list[FeatureSpec] = []
        self.models = {}
        if load is not None:
            self.refresh()

    def __len__(self) -> int:
        """How many outcomes are scored; 0 means the rules step runs no scorer at all.

        >>> len(OutcomeScorer())
        0
        """
        return len(self.models)

    def refresh(self) -> bool:
        """Reload the active models; True if the set of (outcome, version) changed."""
        if self._load is None:
            return False
        if self._versions is not None:
            seen = dict(self._versions())
            if seen == self._seen and self.models is not None and self._seen:
                return False
            self._seen = seen
        models = dict(self._load())
        before = {(o, m.version) for o, m in self.models.items()}
        self.models = models
        return before != {(o, m.version) for o, m in models.items()}

    @property
    def models(self) -> dict[str, Model]:
        """The models scored per event (outcome -> model); setting them plans the layouts."""
        return self._models

    @models.setter
    def models(self, models: dict[str, Model]) -> None:
        specs: list[FeatureSpec] = []
        plan: list[tuple[str, Model, int]] = []
        for outcome, model in models.items():
            if model.spec not in specs:
                specs.append(model.spec)
            plan.append((outcome, model, specs.index(model.spec)))
        self._models, self._plan, self._specs = models, plan, specs

    def __call__(self, journey: Journey, members: Mapping[str, int], now: int) -> None:
        started = time.perf_counter()
        specs = self._specs
        vectors: list[PackedRow | None] = [None] * len(specs)
        achieved = journey.outcomes
        scores = journey.scores
        for outcome, model, k in self._plan:
            if outcome in achieved:
                continue  # achieved: the score no longer says anything about this visit
            x = vectors[k]
            if x is None:
                x = vectors[k] = PackedRow(vector(journey, members, now, specs[k]))
            try:
                p = model.predict_one(x)
            except Exception:  # a broken model fails alone; the event is still stored
                self.errors += 1
                if self.errors <= 10:
                    log.exception("scoring %s failed", outcome)
                continue
            scores[outcome] = rescored(scores.get(outcome), p, model.quantile(p))
        SCORING_SECONDS.observe(time.perf_counter() - started)

    def explain(
        self, journey: Journey, members: Mapping[str, int], now: int, top: int = 5
    ) -> dict[str, list[dict[str, Any]]]:
        """Why each score is what it is: the features contributing most, with their values."""
        out: dict[str, list[dict[str, Any]]] = {}
        for outcome, model in self.models.items():
            x = vector(journey, members, now, model.spec)
            values = dict(zip(model.spec.names, x, strict=True))
            out[outcome] = [
                {"feature": name, "value": values.get(name), "contribution": round(c, 6)}
                for name, c in model.contributions(x, top)
            ]
        return out
