"""``opportune train``: outcome models on the stored visits, or the routing KPI models."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import click

from opportune.cli.options import (
    common,
    exit_invalid_workspace,
    fail,
    open_database,
    settings_from,
    shown,
)

_MORE = (
    "let more history arrive, train on what there is with --force, or try it on "
    "simulated history (`opportune simulate web`, `opportune simulate contact-center`)"
)


def training_context(opts: dict[str, Any]) -> tuple[Any, Any, Any, int]:
    """The database (migrated), the rules in force, the model registry and the longest
    session timeout of the workspace's sites (visits younger than that may not be over)."""
    from opportune.api.app import EXAMPLE_WORKSPACE
    from opportune.engine.rules import RuleBook
    from opportune.ml.outcomes.registry import ModelRegistry
    from opportune.workspace import ConfigError, load_workspace

    settings = settings_from(**opts)
    try:
        workspace = load_workspace(settings.workspace or EXAMPLE_WORKSPACE)
    except ConfigError as exc:
        exit_invalid_workspace(exc.problems)
    engine = open_database(settings)
    rules = RuleBook(workspace, engine)
    rules.refresh()
    timeout_ms = max(
        [s.session_timeout_minutes * 60_000 for s in workspace.sites.values()]
        or [settings.session_timeout_s * 1000]
    )
    return engine, rules, ModelRegistry(settings.data_dir / "models"), timeout_ms


def quiet_openmp() -> None:
    """LightGBM's OpenMP threads spin while they wait by default: on a machine that also
    serves traffic that wastes a core and, with a busy neighbour, slows training down
    several times. Call before LightGBM (and its OpenMP runtime) is loaded."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def train_now(
    engine: Any,
    rules: Any,
    registry: Any,
    *,
    outcomes: list[str],
    timeout_ms: int,
    force: bool,
    threads: int,
    workers: int,
    **window: Any,
) -> list[Any]:
    """``train_outcomes`` as of now with ``threads`` LightGBM threads (a progress bar on a
    terminal); ``window``: its ``days``, when not the default."""
    from opportune.engine.retraining import outcome_docs
    from opportune.ml.outcomes.model import TrainingConfig
    from opportune.ml.outcomes.training import train_outcomes
    from opportune.store.visits import StoredVisits

    return train_outcomes(
        StoredVisits(engine),
        rules.ruleset,
        outcome_docs(rules),
        registry,
        now_ms=int(time.time() * 1000),
        outcomes=outcomes,
        session_timeout_ms=timeout_ms,
        force=force,
        config=TrainingConfig(num_threads=threads),
        workers=workers,
        progress=sys.stderr.isatty(),
        **window,
    )


@click.command()
@common
@click.argument("what", type=click.Choice(["outcomes", "routing"]), default="outcomes")
@click.option(
    "--outcome",
    "outcomes",
    multiple=True,
    help="Outcome to train (repeatable; default: every scoring-enabled outcome)",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    help="routing: queue to train (repeatable; default: every predictive queue with a KPI)",
)
@shown("--days", type=int, default=90, help="Days of history")
@click.option("--force", is_flag=True, help="Train even if the history is not ready yet")
@shown(
    "--threads",
    type=click.IntRange(1, 64),
    default=2,
    help="LightGBM threads (and processes replaying the visits)",
)
def train(
    what: str,
    outcomes: tuple[str, ...],
    queues: tuple[str, ...],
    days: int,
    force: bool,
    threads: int,
    **opts: Any,
) -> None:
    """Train outcome models on the stored visits (default), or with ROUTING the KPI model of
    each predictive queue on its interactions; activate each one that is not worse."""
    if what == "routing":
        _train_routing(queues, days, force, opts)
    else:
        _train_outcomes(outcomes, days, force, threads, opts)


def _train_outcomes(
    outcomes: tuple[str, ...], days: int, force: bool, threads: int, opts: dict[str, Any]
) -> None:
    quiet_openmp()
    from opportune.engine.retraining import outcome_docs
    from opportune.ml.outcomes.model import TrainingError, headline
    from opportune.ml.outcomes.training import scoring_enabled

    if days < 1:
        fail("--days must be at least 1", 2)
    engine, rules, registry, timeout_ms = training_context(opts)
    names = list(outcomes) or scoring_enabled(outcome_docs(rules))
    if not names:
        click.echo(
            "no outcome has scoring enabled (scoring: {enabled: true} in its document); "
            "name one with --outcome",
            err=True,
        )
        sys.exit(1)
    with registry.training_lock() as mine:
        if not mine:
            fail("another process is training models right now", 3)
        try:
            reports = train_now(
                engine,
                rules,
                registry,
                outcomes=names,
                timeout_ms=timeout_ms,
                force=force,
                threads=threads,
                workers=min(threads, os.cpu_count() or 1),
                days=days,
            )
        except TrainingError as exc:
            fail(str(exc))
    for r in reports:
        click.echo(f"{r.outcome}: {r.message}")
        if r.card is not None:
            click.echo(f"  {headline(r.card)}")
            click.echo(f"  card: {registry.root / r.outcome / str(r.version) / 'card.json'}")
    if not any(r.trained for r in reports):
        fail(f"no model trained (why: above); {_MORE}")


def _routing_queues(all_queues: Any, all_kpis: Any, queues: tuple[str, ...]) -> list[str]:
    """The queues named, or every predictive queue with a KPI (exits 1 if there is none)."""
    names = list(queues) or [
        n for n, q in all_queues.items() if q.predictive.enabled and q.kpi in all_kpis
    ]
    if not names:
        click.echo(
            "no queue has predictive routing on with a KPI (predictive: {enabled: true} and "
            "kpi: in its document); name one with --queue",
            err=True,
        )
        sys.exit(1)
    return names


def _train_routing(queues: tuple[str, ...], days: int, force: bool, opts: dict[str, Any]) -> None:
    from opportune.ml.routing.registry import RoutingRegistry
    from opportune.ml.routing.training import RoutingTrainingError, train_routing
    from opportune.store.routing_history import StoredRoutingHistory

    if days < 1:
        fail("--days must be at least 1", 2)
    engine, rules, *_ = training_context(opts)
    # The KPIs and queue KPIs set over the API count as much as the workspace's.
    all_queues, all_kpis = rules.queues(), rules.kpis()
    names = _routing_queues(all_queues, all_kpis, queues)
    registry = RoutingRegistry(settings_from(**opts).data_dir / "routing-models")
    trained = False
    with registry.training_lock() as mine:
        if not mine:
            fail("another process is training routing models right now", 3)
        for name in names:
            try:
                r = train_routing(
                    StoredRoutingHistory(engine),
                    queue=name,
                    queues=all_queues,
                    agents=rules.workspace.agents,
                    kpis=all_kpis,
                    registry=registry,
                    days=days,
                    force=force,
                    progress=lambda m: click.echo(m, err=True),
                )
            except RoutingTrainingError as exc:
                fail(str(exc))
            click.echo(f"{name}: {r.status}")
            if r.card is not None:
                trained = True
                _echo_routing_card(r.card)
                click.echo(f"  card: {registry.root / name / str(r.version) / 'card.json'}")
    if not trained:
        fail(f"no routing model trained (why: above); {_MORE}")


def _echo_routing_card(card: Mapping[str, Any]) -> None:
    """A routing model's holdout figures and its benefit assessment."""
    h = card["model"].get("holdout", {})
    b = card.get("benefit", {})
    fig = ", ".join(f"{k} {v:.4g}" for k, v in h.items() if isinstance(v, float))
    click.echo(f"  holdout: {fig}")
    if "uplift" in b:
        click.echo(
            f"  benefit assessment: {b['uplift']:+.4f} ({b['ciLow']:+.4f} to "
            f"{b['ciHigh']:+.4f}) on {b['decisions']} decisions, "
            f"observed {b['observed']:.4f}"
        )
