"""Readiness gating: an outcome is trained only once its history is large enough; the
schedule's rule; ``opportune train`` end to end on a stored history."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select
from sqlalchemy import event as sa_event

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.cli import main
from opportune.engine.enrichment import GeoResolver
from opportune.engine.ingest import Ingestor
from opportune.engine.retraining import outcome_docs, retrain_loop
from opportune.engine.rules import RuleBook
from opportune.ml.outcomes.model import TrainingConfig
from opportune.ml.outcomes.readiness import Readiness, readiness
from opportune.ml.outcomes.registry import ModelRegistry
from opportune.ml.outcomes.training import scoring_enabled, train_outcomes
from opportune.settings import Settings
from opportune.sim.web import generate, to_batches
from opportune.store.db import make_engine, migrate
from opportune.store.schema import sessions
from opportune.store.visits import StoredVisits
from opportune.store.writer import GroupCommitWriter
from opportune.workspace import load_workspace
from opportune.workspace.documents import ScoringDoc

DAY = 86_400_000
NOW = 1_760_000_000_000
SESSIONS = 600
CONFIG = TrainingConfig(num_threads=1, baselines=False)
SCORING = {
    # name -> the scoring block put into the outcome's document
    "loan_submitted": "scoring: {enabled: true, minSessions: 500, minAchievements: 20}",
    "quote_requested": "scoring: {enabled: true, minSessions: 10000, minAchievements: 20}",
    "demo_booked": "scoring: {enabled: true, minSessions: 10, minAchievements: 500}",
}


@pytest.mark.parametrize(
    ("sessions", "achievements", "ready", "status"),
    [
        (0, 0, False, "collecting data: 0 of 1000 sessions, 0 of 50 achievements"),
        (999, 80, False, "collecting data: 999 of 1000 sessions, 80 of 50 achievements"),
        (5000, 49, False, "collecting data: 5000 of 1000 sessions, 49 of 50 achievements"),
        (1000, 50, True, "ready"),
        (25_000, 900, True, "ready"),
    ],
)
def test_readiness_needs_both_enough_sessions_and_enough_achievements(
    sessions: int, achievements: int, ready: bool, status: str
) -> None:
    r = readiness("o", ScoringDoc(enabled=True), sessions=sessions, achievements=achievements)
    assert r.ready is ready
    assert r.status == status


def test_the_status_names_the_active_model_or_says_scoring_is_off() -> None:
    doc = ScoringDoc(enabled=True, min_sessions=10, min_achievements=5)
    assert readiness("o", doc, sessions=3, achievements=0, active_version="v4").status == (
        "active model v4"
    )
    off = readiness("o", ScoringDoc(), sessions=5000, achievements=500)
    assert off.ready and off.status == "scoring not enabled"
    assert Readiness("o", True, 10, 10, 5, 5).ready


def _no_sync(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=OFF")
    cur.close()


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A workspace with three scoring settings and a database of simulated visits."""
    tmp = tmp_path_factory.mktemp("stored")
    ws = tmp / "workspace"
    ws.mkdir()
    for name in ("sites.yaml", "pages.yaml", "segments.yaml"):
        shutil.copy(EXAMPLE_WORKSPACE / name, ws / name)
    text = (EXAMPLE_WORKSPACE / "outcomes.yaml").read_text("utf-8")
    # The example's own scoring blocks give way to the three settings under test.
    text = re.sub(r"^scoring:.*\n", "", text, flags=re.MULTILINE)
    for name, block in SCORING.items():
        text = text.replace(f"name: {name}\n", f"name: {name}\n{block}\n")
    (ws / "outcomes.yaml").write_text(text, "utf-8")
    url = f"sqlite:///{tmp / 'opportune.db'}"
    engine = make_engine(url)
    migrate(engine)
    sa_event.listen(engine, "connect", _no_sync)
    engine.dispose()
    rules = RuleBook(load_workspace(ws), engine)
    writer = GroupCommitWriter(engine)
    ingestor = Ingestor(
        settings=Settings(database_url="sqlite://"),
        engine=engine,
        writer=writer,
        geo=GeoResolver(trust_headers=False, mmdb_path=None),
        rules=rules,
    )
    site = next(iter(load_workspace(ws).sites.values()))
    days = 3
    sessions = generate(
        4, start_ms=NOW - (days + 1) * DAY, days=days, visitors_per_day=SESSIONS // days
    )

    async def run() -> None:
        window: list[Any] = []
        seen: set[str] = set()

        async def drain() -> None:
            await asyncio.gather(
                *[
                    ingestor.ingest(
                        sb.batch,
                        site,
                        now_ms=sb.received_ms,
                        headers={"user-agent": sb.user_agent},
                        peer=None,
                    )
                    for sb in window
                ]
            )
            window.clear()
            seen.clear()

        for sb in to_batches(sessions):
            if sb.batch.visitor_id in seen or len(window) >= 128:
                await drain()
            window.append(sb)
            seen.add(sb.batch.visitor_id)
        await drain()
        await writer.aclose()
        await ingestor.live.aclose()

    asyncio.run(run())
    engine.dispose()
    return ws, tmp, url


def _engine_rules(stored: tuple[Path, Path, str]) -> tuple[Engine, RuleBook]:
    ws, _, url = stored
    engine = make_engine(url)
    return engine, RuleBook(load_workspace(ws), engine)


def test_training_waits_for_enough_history(stored: tuple[Path, Path, str], tmp_path: Path) -> None:
    engine, rules = _engine_rules(stored)
    registry = ModelRegistry(tmp_path / "models")
    assert scoring_enabled(outcome_docs(rules)) == [
        "demo_booked",
        "loan_submitted",
        "quote_requested",
    ]
    try:
        reports = {
            r.outcome: r
            for r in train_outcomes(
                StoredVisits(engine),
                rules.ruleset,
                outcome_docs(rules),
                registry,
                now_ms=NOW,
                days=10,
                config=CONFIG,
            )
        }
    finally:
        engine.dispose()
    loan, quote, demo = (reports[o] for o in ("loan_submitted", "quote_requested", "demo_booked"))
    assert loan.readiness.ready and loan.trained and loan.activated
    assert loan.version == "v1" and registry.active_version("loan_submitted") == "v1"
    assert loan.readiness.sessions == SESSIONS
    assert loan.card is not None and loan.card["data"]["visits"] == SESSIONS
    assert not quote.trained and not demo.trained
    assert quote.message.startswith(f"not trained: collecting data: {SESSIONS} of 10000 sessions, ")
    assert "of 500 achievements" in demo.message
    assert registry.versions("quote_requested") == registry.versions("demo_booked") == []


def test_force_trains_before_the_history_is_ready(
    stored: tuple[Path, Path, str], tmp_path: Path
) -> None:
    engine, rules = _engine_rules(stored)
    registry = ModelRegistry(tmp_path / "models")
    try:
        [quote] = train_outcomes(
            StoredVisits(engine),
            rules.ruleset,
            outcome_docs(rules),
            registry,
            now_ms=NOW,
            outcomes=["quote_requested"],
            days=10,
            force=True,
            config=CONFIG,
        )
    finally:
        engine.dispose()
    assert not quote.readiness.ready
    assert quote.trained and quote.activated, quote.message
    assert registry.versions("quote_requested") == ["v1"]


def test_visits_still_open_are_not_history(stored: tuple[Path, Path, str], tmp_path: Path) -> None:
    """Labels of a visit that may go on are not final: the window ends a timeout ago."""
    engine, rules = _engine_rules(stored)
    try:
        with engine.connect() as conn:
            starts = sorted(r[0] for r in conn.execute(select(sessions.c.started_at)))
            now = starts[len(starts) // 2] + 60_000  # that visit is a minute old then
            until = now - 20 * 60_000
            ended = conn.execute(
                select(func.count()).where(sessions.c.last_event_at < until)
            ).scalar()
            begun = conn.execute(select(func.count()).where(sessions.c.started_at < now)).scalar()
        [loan] = train_outcomes(
            StoredVisits(engine),
            rules.ruleset,
            outcome_docs(rules),
            ModelRegistry(tmp_path),
            now_ms=now,
            outcomes=["loan_submitted"],
            days=10,
            config=CONFIG,
        )
    finally:
        engine.dispose()
    assert loan.readiness.sessions == ended < begun


def test_the_cli_trains_lists_and_refuses(stored: tuple[Path, Path, str], tmp_path: Path) -> None:
    ws, _, url = stored
    common = ["--data-dir", str(tmp_path), "--database-url", url, "--workspace", str(ws)]
    common += ["--threads", "1"]
    runner = CliRunner()
    refused = runner.invoke(main, ["train", *common, "--outcome", "quote_requested"])
    assert refused.exit_code == 1
    assert "collecting data" in refused.output and "--force" in refused.output
    done = runner.invoke(main, ["train", *common, "--outcome", "loan_submitted", "--days", "3650"])
    assert done.exit_code == 0, done.output
    assert "loan_submitted: v1 activated" in done.output and "ROC AUC" in done.output
    listed = runner.invoke(main, ["models", "list", "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "* v1" in listed.output
    back = runner.invoke(
        main, ["models", "rollback", "loan_submitted", "--data-dir", str(tmp_path)]
    )
    assert back.exit_code == 1 and "no earlier active version" in back.output
    missing = runner.invoke(
        main, ["models", "activate", "loan_submitted", "v9", "--data-dir", str(tmp_path)]
    )
    assert missing.exit_code == 1 and "no version v9" in missing.output


def test_the_schedule_retrains_what_is_due_and_ready(
    stored: tuple[Path, Path, str], tmp_path: Path
) -> None:
    ws, _, url = stored
    settings = Settings(data_dir=tmp_path, database_url=url, workspace=ws)
    engine = make_engine(url)
    rules = RuleBook(load_workspace(ws), engine)
    activated: list[list[str]] = []
    checks = 0

    def clock() -> float:
        nonlocal checks
        checks += 1
        return NOW / 1000

    async def run() -> None:
        task = asyncio.ensure_future(
            retrain_loop(
                settings,
                rules,
                days=3650,
                check_every_s=0.05,
                threads=1,
                on_activated=activated.append,
                clock=clock,
            )
        )
        for _ in range(1200):
            await asyncio.sleep(0.05)
            if activated and checks > 5:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
    finally:
        engine.dispose()
    assert activated == [["loan_submitted"]]  # once: afterwards it is not due for a day
    registry = ModelRegistry(tmp_path / "models")
    assert registry.versions("loan_submitted") == ["v1"]
    assert registry.active_version("loan_submitted") == "v1"
    assert registry.versions("quote_requested") == []  # not ready: never trained
