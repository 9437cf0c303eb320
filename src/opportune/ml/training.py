"""Training as a service: from the stored visits to registered, maybe activated, models.

One run replays the window's visits once for every outcome it trains (``examples``), then
per outcome: checks readiness, trains and calibrates (``outcome_model``), scores the active
model on the new model's test visits, saves the new version with the comparison in its
card, and activates it when it is not worse (``registry.not_worse``). The CLI's ``train``
and the server's scheduled retraining (``schedule``) both run this.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from opportune.engine.rules import RuleBook
from opportune.ml.calibration import summary
from opportune.ml.examples import build_examples, spec_for
from opportune.ml.history import history_counts
from opportune.ml.outcome_model import (
    TrainedModel,
    TrainingConfig,
    TrainingError,
    train_outcome_model,
)
from opportune.ml.readiness import Readiness, readiness
from opportune.ml.registry import LoadedModel, ModelRegistry, not_worse
from opportune.workspace.documents import OutcomeDoc, ScoringDoc

DAY_MS = 86_400_000
DEFAULT_DAYS = 90
log = logging.getLogger(__name__)


@dataclass(slots=True)
class TrainReport:
    """What a training run did for one outcome."""

    outcome: str
    readiness: Readiness
    trained: bool = False
    version: str | None = None
    activated: bool = False
    card: dict[str, Any] | None = None
    message: str = ""


def scoring_enabled(rules: RuleBook) -> list[str]:
    """Outcomes whose documents turn scoring on (workspace files and API alike)."""
    return [
        d.name
        for d, _src in rules.docs("outcome")
        if isinstance(d, OutcomeDoc) and d.scoring.enabled
    ]


def _scoring(rules: RuleBook, outcome: str) -> ScoringDoc:
    found = rules.get("outcome", outcome)
    if found is None:
        raise TrainingError(f"no outcome named {outcome!r} in the rules")
    doc = found[0]
    assert isinstance(doc, OutcomeDoc)
    return doc.scoring


def check_readiness(
    engine: Engine,
    rules: RuleBook,
    registry: ModelRegistry,
    outcomes: Sequence[str],
    *,
    since_ms: int,
    until_ms: int,
) -> dict[str, Readiness]:
    """The readiness of each of ``outcomes`` over the window's finished visits."""
    with engine.connect() as conn:
        counts = history_counts(conn, since_ms=since_ms, until_ms=until_ms)
    return {
        o: readiness(
            o,
            _scoring(rules, o),
            sessions=counts.sessions,
            achievements=counts.achievements.get(o, 0),
            active_version=registry.active_version(o),
        )
        for o in outcomes
    }


def compare_with_active(trained: TrainedModel, active: LoadedModel | None) -> dict[str, Any]:
    """The activation check: both models scored on the new model's test prefixes."""
    new = summary(trained.test_p, trained.test.y)
    out: dict[str, Any] = {
        "comparedWith": None,
        "new": {"rocAuc": new["rocAuc"], "brier": new["brier"]},
    }
    if active is None:
        return {**out, "notWorse": True, "reason": "no active model"}
    try:
        X = trained.test.features(active.spec)
    except KeyError:
        return {
            **out,
            "comparedWith": active.version,
            "notWorse": True,
            "reason": "the active model's features were not recorded; not compared",
        }
    old = summary(active.predict_many(X), trained.test.y)
    ok, reason = not_worse(new, old)
    return {
        **out,
        "comparedWith": active.version,
        "active": {"rocAuc": old["rocAuc"], "brier": old["brier"]},
        "notWorse": ok,
        "reason": reason,
    }


def train_outcomes(
    engine: Engine,
    rules: RuleBook,
    registry: ModelRegistry,
    *,
    now_ms: int,
    outcomes: Sequence[str] | None = None,
    days: int = DEFAULT_DAYS,
    session_timeout_ms: int = 20 * 60_000,
    force: bool = False,
    config: TrainingConfig | None = None,
    workers: int = 1,
    progress: bool = False,
) -> list[TrainReport]:
    """Train ``outcomes`` (default: every scoring-enabled one) on the last ``days`` days
    of finished visits; readiness is required unless ``force``. ``workers`` processes
    replay the visits (one per core)."""
    names = list(outcomes) if outcomes is not None else scoring_enabled(rules)
    since = now_ms - days * DAY_MS
    until = now_ms - session_timeout_ms  # a visit still open may yet achieve an outcome
    ready = check_readiness(engine, rules, registry, names, since_ms=since, until_ms=until)
    reports = {o: TrainReport(o, ready[o]) for o in names}
    todo = [o for o in names if force or ready[o].ready]
    for o in names:
        if o not in todo:
            reports[o].message = f"not trained: {ready[o].status} (--force trains anyway)"
    if not todo:
        return list(reports.values())
    actives = {o: registry.load_active(o) for o in todo}
    spec = spec_for(rules.ruleset)
    extra = list(
        dict.fromkeys(m.spec for m in actives.values() if m is not None and m.spec != spec)
    )
    examples = build_examples(
        engine,
        rules.ruleset,
        spec,
        since_ms=since,
        until_ms=until,
        extra_specs=extra,
        workers=workers,
        progress=progress,
    )
    for o in todo:
        report = reports[o]
        try:
            trained = train_outcome_model(
                examples.for_outcome(o), config, now_ms=now_ms, progress=progress
            )
        except TrainingError as exc:
            report.message = f"not trained: {exc}"
            continue
        check = compare_with_active(trained, actives[o])
        trained.card["activation"] = check
        version = registry.save(o, trained)
        report.trained, report.version = True, version
        report.card = registry.card(o, version)
        if check["notWorse"]:
            registry.activate(o, version, by="rule", now_ms=now_ms)
            report.activated = True
            report.message = f"{version} activated ({check['reason']})"
        else:
            report.message = (
                f"{version} saved, not activated: {check['reason']} "
                f"(the active model stays {check['comparedWith']})"
            )
        log.info("outcome model %s: %s", o, report.message)
    return list(reports.values())
