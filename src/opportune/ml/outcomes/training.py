"""Training as a service: from the stored visits to registered, maybe activated, models.

One run replays the window's visits once for every outcome it trains (``examples``), then
per outcome: checks readiness, trains and calibrates (``model``), scores the active model
on the new model's test visits, saves the new version with the comparison in its card, and
activates it when it is not worse (``registry.not_worse``). The CLI's ``train`` and the
server's scheduled retraining (``engine/retraining.py``) both run this. The visits come
from a :class:`~opportune.ml.outcomes.visits.VisitHistory` and the rules as a
:class:`~opportune.core.rules.Ruleset` with the outcome documents, so that training knows
nothing of where either is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from opportune.core.rules import Ruleset
from opportune.ml.calibration import summary
from opportune.ml.outcomes.examples import build_examples
from opportune.ml.outcomes.features import spec_for
from opportune.ml.outcomes.model import (
    TrainedModel,
    TrainingConfig,
    TrainingError,
    train_outcome_model,
)
from opportune.ml.outcomes.readiness import Readiness, readiness
from opportune.ml.outcomes.registry import LoadedModel, ModelRegistry, not_worse
from opportune.ml.outcomes.visits import VisitHistory
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


def scoring_enabled(docs: Iterable[object]) -> list[str]:
    """Outcomes whose documents turn scoring on (workspace files and API alike), of
    ``docs`` (other kinds of document are passed over).

    >>> when = {"event": {"type": "custom", "name": "signup"}}
    >>> scoring_enabled([OutcomeDoc(name="signup", condition=when, scoring={"enabled": True}),
    ...                  OutcomeDoc(name="quote", condition=when)])
    ['signup']
    """
    return [d.name for d in docs if isinstance(d, OutcomeDoc) and d.scoring.enabled]


def _scoring(docs: Iterable[object], outcome: str) -> ScoringDoc:
    for doc in docs:
        if isinstance(doc, OutcomeDoc) and doc.name == outcome:
            return doc.scoring
    raise TrainingError(f"no outcome named {outcome!r} in the rules")


def check_readiness(
    history: VisitHistory,
    docs: Sequence[object],
    registry: ModelRegistry,
    outcomes: Sequence[str],
    *,
    since_ms: int,
    until_ms: int,
) -> dict[str, Readiness]:
    """The readiness of each of ``outcomes`` (documents in ``docs``) over the window's
    finished visits."""
    counts = history.counts(since_ms=since_ms, until_ms=until_ms)
    return {
        o: readiness(
            o,
            _scoring(docs, o),
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
    history: VisitHistory,
    ruleset: Ruleset,
    docs: Sequence[object],
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
    """Train ``outcomes`` (default: every scoring-enabled one of the outcome documents
    ``docs``) on the last ``days`` days of finished visits through ``ruleset``; readiness is
    required unless ``force``. ``workers`` processes replay the visits (one per core)."""
    names = list(outcomes) if outcomes is not None else scoring_enabled(docs)
    since = now_ms - days * DAY_MS
    until = now_ms - session_timeout_ms  # a visit still open may yet achieve an outcome
    ready = check_readiness(history, docs, registry, names, since_ms=since, until_ms=until)
    reports = {o: TrainReport(o, ready[o]) for o in names}
    todo = [o for o in names if force or ready[o].ready]
    for o in names:
        if o not in todo:
            reports[o].message = f"not trained: {ready[o].status} (--force trains anyway)"
    if not todo:
        return list(reports.values())
    actives = {o: registry.load_active(o) for o in todo}
    spec = spec_for(ruleset)
    extra = list(
        dict.fromkeys(m.spec for m in actives.values() if m is not None and m.spec != spec)
    )
    examples = build_examples(
        history,
        ruleset,
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
            report.message = f"{version} saved, not activated: {check['reason']} " + (
                f"(the active model stays {check['comparedWith']})"
                if check["comparedWith"]
                else "(no model scores it)"
            )
        log.info("outcome model %s: %s", o, report.message)
    return list(reports.values())
