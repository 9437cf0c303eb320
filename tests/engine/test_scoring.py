"""The live scorer: one feature vector per distinct layout per event, packed once for all
the models that read it, scores in the models' order; and the packed row scores exactly
as the plain list does."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from opportune.core.journey import Journey
from opportune.core.scores import Scores
from opportune.engine import scoring
from opportune.engine.scoring import OutcomeScorer
from opportune.ml.booster import PackedRow, RowPredictor
from opportune.ml.outcomes.features import FeatureSpec


class FakeModel:
    def __init__(self, outcome: str, spec: FeatureSpec, scale: float) -> None:
        self.outcome, self.version, self.spec, self.card = outcome, "v1", spec, {}
        self.scale = scale
        self.rows: list[list[float]] = []

    def predict_one(self, x: list[float]) -> float:
        self.rows.append(x)
        return min(1.0, self.scale * (1 + x[0]) / 100)

    def contributions(self, x: list[float], top: int = 5) -> list[tuple[str, float]]:
        return []

    def quantile(self, p: float) -> float:
        return p / 2


def test_one_vector_per_layout_and_scores_in_model_order(monkeypatch: Any) -> None:
    one, other = FeatureSpec(segments=("a",)), FeatureSpec(segments=("b",))
    same_as_one = FeatureSpec(segments=("a",))  # equal, not identical: shares the vector
    models = {
        "z": FakeModel("z", one, 1.0),
        "y": FakeModel("y", other, 2.0),
        "x": FakeModel("x", same_as_one, 3.0),
    }
    calls: list[FeatureSpec] = []
    real = scoring.vector

    def counting(j: Journey, members: Any, now: int, spec: FeatureSpec) -> list[float]:
        calls.append(spec)
        return real(j, members, now, spec)

    monkeypatch.setattr(scoring, "vector", counting)
    scorer = OutcomeScorer(lambda: models)
    j = Journey(session_id="s", started_at=0)
    j.counts["page_view"] = 1
    scorer(j, {}, 1_000)
    assert calls == [one, other]
    assert list(j.scores) == ["z", "y", "x"]
    assert all(type(m.rows[0]) is PackedRow for m in models.values())
    assert models["z"].rows[0] is models["x"].rows[0]
    assert models["z"].rows[0] == real(j, {}, 1_000, one)
    p = j.scores["y"].probability
    assert j.scores["y"] == Scores(p, p, p / 2, p / 2)

    # An achieved outcome is not scored again; a new set of models is planned afresh.
    j.outcomes["z"] = [1_000, None]
    calls.clear()
    scorer(j, {}, 2_000)
    assert calls == [other, one]  # in the order the models need them
    assert len(models["z"].rows) == 1 and len(models["x"].rows) == 2
    scorer.models = {"y": models["y"]}
    calls.clear()
    scorer(j, {}, 3_000)
    assert calls == [other]


@pytest.fixture(scope="module")
def model_text() -> str:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 12))
    y = (X[:, 0] + X[:, 3] * X[:, 5] + rng.normal(scale=0.5, size=400) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=40).model_to_string()


def test_a_packed_row_scores_as_the_list_does(model_text: str) -> None:
    fast = RowPredictor(model_text, 12)
    assert fast.fast
    rng = np.random.default_rng(4)
    for row in rng.normal(scale=3, size=(300, 12)).tolist():
        row[2] = float(int(row[2]))  # whole numbers too, as counts are
        packed = PackedRow(row)
        assert packed == row
        assert fast(packed) == fast(row)
    with pytest.raises(ValueError, match="features"):
        fast(PackedRow([0.0] * 11))
