"""The model registry and the serving interface: fast scores equal LightGBM's, calibrators
agree on both paths, versions and the active pointer, the activation rule, rollback."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.engine.rules import RuleBook
from opportune.ml.booster import RowPredictor
from opportune.ml.calibration import Isotonic, Platt, calibrator_from_json, fit_isotonic
from opportune.ml.outcomes.examples import OutcomeExamples
from opportune.ml.outcomes.features import spec_for
from opportune.ml.outcomes.model import (
    TrainedModel,
    TrainingConfig,
    split_by_time,
    train_outcome_model,
)
from opportune.ml.outcomes.registry import LoadedModel, ModelRegistry, not_worse
from opportune.ml.outcomes.training import compare_with_active
from opportune.ml.registry import ActivationRefused, RegistryError
from opportune.sim.web import generate
from opportune.sim.web_history import build_sim_examples
from opportune.workspace import load_workspace

START = 1_760_000_000_000
CONFIG = TrainingConfig(num_threads=1, baselines=False)


@pytest.fixture(scope="module")
def loan(tmp_path_factory: pytest.TempPathFactory) -> OutcomeExamples:
    ws = tmp_path_factory.mktemp("ws")
    for name in ("sites.yaml", "pages.yaml", "segments.yaml", "outcomes.yaml"):
        shutil.copy(EXAMPLE_WORKSPACE / name, ws / name)
    rs = RuleBook(load_workspace(ws)).ruleset
    sessions = generate(21, start_ms=START, days=10, visitors_per_day=300)
    return build_sim_examples(sessions, rs, spec_for(rs)).for_outcome("loan_submitted")


@pytest.fixture(scope="module")
def good(loan: OutcomeExamples) -> TrainedModel:
    return train_outcome_model(loan, CONFIG, now_ms=START + 11 * 86_400_000)


@pytest.fixture(scope="module")
def bad(loan: OutcomeExamples) -> TrainedModel:
    """Trained on shuffled labels (the test visits keep their true ones): a model of
    nothing, to be judged on the same recent visits as the good one."""
    shuffled = loan.subset(np.ones(len(loan), dtype=bool))
    train = np.isin(shuffled.visit, split_by_time(loan)["train"].visit)
    shuffled.y[train] = np.random.default_rng(0).permutation(shuffled.y[train])
    return train_outcome_model(shuffled, CONFIG, now_ms=START + 12 * 86_400_000)


def test_fast_scores_equal_lightgbm_raw_predictions(good: TrainedModel) -> None:
    n = len(good.spec.names)
    rows = good.test.X[:2000]
    rng = np.random.default_rng(1)
    odd = rng.normal(0, 50, size=(200, n))
    odd[::7] = 0.0
    odd[1::7] = -1.0
    X = np.vstack([rows, odd])
    want = good.booster.predict(X, raw_score=True)
    fast = RowPredictor(good.model_text, n)
    assert fast.fast
    got = np.array([fast(r) for r in X.tolist()])
    assert np.max(np.abs(got - want)) <= 1e-9
    with pytest.raises(ValueError, match="features"):
        fast([0.0] * (n - 1))


def test_calibrators_give_the_same_probability_one_by_one_and_in_bulk() -> None:
    rng = np.random.default_rng(2)
    raw = rng.normal(size=3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-2 * raw))).astype(float)
    iso = fit_isotonic(raw, y)
    platt = Platt(1.7, -0.3)
    probe = np.concatenate([raw, [-50.0, 50.0, iso.x[0], iso.x[-1], -800.0, 800.0]])
    for cal in (iso, platt):
        bulk = cal.many(probe)
        assert np.all((bulk >= 0) & (bulk <= 1))
        one = np.array([cal(float(r)) for r in probe])
        assert np.max(np.abs(one - bulk)) <= 1e-12
        assert calibrator_from_json(cal.to_json()) == cal
    assert np.all(np.diff(iso.many(np.sort(probe))) >= 0)
    with pytest.raises(ValueError, match="unknown calibrator"):
        calibrator_from_json({"kind": "beta"})
    assert Isotonic((0.0, 1.0), (0.2, 0.4))(0.5) == pytest.approx(0.3)


def test_a_saved_model_loads_and_scores_as_trained(good: TrainedModel, tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    version = reg.save("loan_submitted", good)
    assert version == "v1" and reg.versions("loan_submitted") == ["v1"]
    folder = tmp_path / "models" / "loan_submitted" / "v1"
    assert {p.name for p in folder.iterdir()} == {
        "model.txt",
        "calibrator.json",
        "spec.json",
        "card.json",
        "reliability.svg",
    }
    assert ET.parse(folder / "reliability.svg").getroot().tag.endswith("svg")
    assert reg.load_active("loan_submitted") is None  # saved is not active
    m = reg.load("loan_submitted", "v1")
    assert isinstance(m, LoadedModel)
    assert (m.outcome, m.version, m.spec) == ("loan_submitted", "v1", good.spec)
    assert m.card["version"] == "v1" and m.card["test"] == good.card["test"]
    X = good.test.X[:500]
    one = np.array([m.predict_one(r) for r in X.tolist()])
    assert np.max(np.abs(one - good.predict_many(X))) <= 1e-9
    assert np.max(np.abs(one - m.predict_many(X))) <= 1e-9


def test_quantile_is_the_share_of_reference_visits_strictly_below(good: TrainedModel) -> None:
    m = LoadedModel(
        "o",
        "v1",
        good.spec,
        {"referenceMax": [0.3, 0.1, 0.2, 0.2]},
        good.model_text,
        good.calibrator,
    )
    assert m.reference_max == [0.1, 0.2, 0.2, 0.3]
    assert [m.quantile(p) for p in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.9)] == [
        0.0,
        0.0,
        0.25,
        0.25,
        0.75,
        0.75,
        1.0,
    ]
    empty = LoadedModel("o", "v1", good.spec, {}, good.model_text, good.calibrator)
    assert empty.quantile(0.5) == 0.0
    real = LoadedModel("o", "v1", good.spec, good.card, good.model_text, good.calibrator)
    assert real.reference_max == sorted(real.reference_max)
    assert 0 < len(real.reference_max) <= 2000
    assert real.quantile(-1.0) == 0.0 and real.quantile(2.0) == 1.0


def test_contributions_explain_the_raw_score(good: TrainedModel) -> None:
    m = LoadedModel("o", "v1", good.spec, good.card, good.model_text, good.calibrator)
    x = good.test.X[int(np.argmax(good.test_p))].tolist()
    top = m.contributions(x, top=5)
    assert len(top) == 5
    assert all(name in good.spec.names for name, _ in top)
    sizes = [abs(c) for _, c in top]
    assert sizes == sorted(sizes, reverse=True)
    full = m.contributions(x, top=len(x))
    bias = m.booster.predict(np.array([x]), pred_contrib=True)[0][-1]
    assert sum(c for _, c in full) + bias == pytest.approx(m.predict_raw_one(x), abs=1e-9)


def test_not_worse_allows_noise_and_refuses_a_clearly_worse_model() -> None:
    active = {"rocAuc": 0.80, "brier": 0.050}
    cases = [
        ({"rocAuc": 0.80, "brier": 0.050}, True),
        ({"rocAuc": 0.796, "brier": 0.0505}, True),  # within both tolerances
        ({"rocAuc": 0.794, "brier": 0.049}, False),  # AUC 0.006 lower
        ({"rocAuc": 0.85, "brier": 0.0511}, False),  # Brier 2.2% higher
        ({"rocAuc": None, "brier": 0.04}, False),
    ]
    for new, want in cases:
        assert not_worse(new, active)[0] is want, new
    assert not_worse({"rocAuc": 0.7, "brier": 0.06}, {"rocAuc": None, "brier": None})[0]


def test_activation_refuses_a_worse_model_and_rollback_restores(
    good: TrainedModel, bad: TrainedModel, tmp_path: Path
) -> None:
    reg = ModelRegistry(tmp_path / "models")
    first = compare_with_active(good, None)
    assert first["notWorse"] and first["comparedWith"] is None
    good.card["activation"] = first
    v1 = reg.save("loan_submitted", good)
    reg.activate("loan_submitted", v1, by="rule")
    active = reg.load_active("loan_submitted")
    assert active is not None and active.version == "v1"

    check = compare_with_active(bad, active)
    assert check["comparedWith"] == "v1"
    assert check["notWorse"] is False, check
    assert check["new"]["rocAuc"] < check["active"]["rocAuc"] - 0.05
    bad.card["activation"] = check
    v2 = reg.save("loan_submitted", bad)
    assert v2 == "v2"
    with pytest.raises(ActivationRefused, match="worse than v1"):
        reg.activate("loan_submitted", v2)
    assert reg.active_version("loan_submitted") == "v1"

    again = compare_with_active(good, reg.load_active("loan_submitted"))
    assert again["notWorse"], again  # the same model is not worse than itself
    good.card["activation"] = again
    v3 = reg.save("loan_submitted", good)
    reg.activate("loan_submitted", v3, by="rule")
    assert reg.active_version("loan_submitted") == "v3"
    assert reg.rollback("loan_submitted") == "v1"
    assert reg.active_version("loan_submitted") == "v1"
    reg.activate("loan_submitted", v2, force=True)  # by hand, overriding the check
    assert reg.load_active("loan_submitted").version == "v2"  # type: ignore[union-attr]
    assert reg.rollback("loan_submitted") == "v1"
    with pytest.raises(RegistryError, match="no earlier active version"):
        reg.rollback("loan_submitted")
    log = reg.history("loan_submitted")["log"]
    assert [(e["action"], e["version"], e["by"]) for e in log] == [
        ("activate", "v1", "rule"),
        ("activate", "v3", "rule"),
        ("rollback", "v1", "hand"),
        ("activate", "v2", "force"),
        ("rollback", "v1", "hand"),
    ]
    assert reg.versions("loan_submitted") == ["v1", "v2", "v3"]
    assert reg.last_trained_at("loan_submitted") == good.card["trainedAtMs"]


def test_versions_sort_by_number_and_names_are_checked(good: TrainedModel, tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    for _ in range(11):
        reg.save("quote_requested", good)
    assert reg.versions("quote_requested") == [f"v{i}" for i in range(1, 12)]
    assert reg.outcomes() == ["quote_requested"]
    (tmp_path / "quote_requested" / "v12").mkdir()  # half-written: no card, not a version
    assert reg.versions("quote_requested")[-1] == "v11"
    for name in ("../etc", "Loan", ""):
        with pytest.raises(RegistryError):
            reg.versions(name)
    with pytest.raises(RegistryError, match="no version v40"):
        reg.activate("quote_requested", "v40")
    with pytest.raises(RegistryError, match="not a version"):
        reg.load("quote_requested", "latest")


def test_one_process_trains_at_a_time(tmp_path: Path) -> None:
    a, b = ModelRegistry(tmp_path), ModelRegistry(tmp_path)
    with a.training_lock() as first:
        assert first
        with b.training_lock() as second:
            assert not second
    with b.training_lock() as third:
        assert third


def test_the_lightgbm_model_text_is_what_is_served(good: TrainedModel) -> None:
    booster = lgb.Booster(model_str=good.model_text)
    assert booster.num_trees() == good.card["model"]["trees"]
    assert booster.num_feature() == len(good.spec.names)
