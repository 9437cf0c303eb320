"""An imported history is what live traffic of the same events would have left: the same
visits, events, identities, segments and outcomes, and the same training examples and
labels — through the one pipeline, its historical mode.

The simulator's visits are sent once live (``Ingestor.ingest`` at each batch's arrival,
each batch sent as it arrived so no clock correction moves an event) into one database,
and imported (``HistoryImport``, the lines shuffled: the import puts each visitor's events
back in time order) into another; then the two are compared row by row.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import Engine, text

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.core.events import Batch
from opportune.core.history import HistoryEvent, decode_json_line
from opportune.engine.enrichment import GeoResolver
from opportune.engine.imports import HistoryImport
from opportune.engine.ingest import Ingestor
from opportune.engine.rules import RuleBook
from opportune.ml.outcomes.examples import build_examples
from opportune.ml.outcomes.features import spec_for
from opportune.settings import Settings
from opportune.sim.web import SimBatch, generate, to_batches
from opportune.store import rollups
from opportune.store.db import make_engine, migrate
from opportune.store.visits import StoredVisits
from opportune.store.writer import GroupCommitWriter
from opportune.workspace import load_workspace

START = 1_760_000_000_000
DAY = 86_400_000
NOW = START + 10 * DAY  # when the import runs: long after the history


def _workspace(folder: Path) -> Path:
    folder.mkdir()
    for name in ("sites.yaml", "pages.yaml", "segments.yaml", "outcomes.yaml"):
        shutil.copy(EXAMPLE_WORKSPACE / name, folder / name)
    return folder


def _as_sent(sb: SimBatch, shifts: dict[str, int]) -> SimBatch:
    """The batch sent as it arrived (live then takes every ``ts`` as it is, so both sides
    store the same times), its events moved onto the server's clock by one shift per
    visitor (its first batch's), so that they keep the order they were recorded in."""
    shift = shifts.setdefault(sb.batch.visitor_id, sb.received_ms - sb.batch.sent_at)
    events = [msgspec.structs.replace(e, ts=e.ts + shift) for e in sb.batch.events]
    batch = msgspec.structs.replace(sb.batch, events=events, sent_at=sb.received_ms)
    return SimBatch(batch, sb.user_agent, sb.received_ms)


def _ingestor(engine: Engine, rules: RuleBook) -> Ingestor:
    return Ingestor(
        settings=Settings(database_url="sqlite://"),
        engine=engine,
        writer=GroupCommitWriter(engine),
        geo=GeoResolver(trust_headers=False, mmdb_path=None),
        rules=rules,
    )


def _live(engine: Engine, rules: RuleBook, batches: list[SimBatch]) -> None:
    ingestor = _ingestor(engine, rules)
    site = rules.workspace.sites["demo"]

    async def run() -> None:
        for sb in batches:  # one at a time, in arrival order
            r = await ingestor.ingest(
                sb.batch,
                site,
                now_ms=sb.received_ms,
                headers={"user-agent": sb.user_agent},
                peer=None,
            )
            assert not r.refused, r.refused
        await ingestor.writer.aclose()

    asyncio.run(run())


def _lines(batches: list[SimBatch]) -> list[HistoryEvent]:
    """Every event as an import line (its visitor, user agent and context), shuffled."""
    out = []
    for sb in batches:
        b: Batch = sb.batch
        for e in b.events:
            line = {
                **msgspec.to_builtins(e),
                "visitorId": b.visitor_id,
                "userAgent": sb.user_agent,
                "context": msgspec.to_builtins(b.context),
            }
            out.append(decode_json_line(msgspec.json.encode(line)))
    random.Random(3).shuffle(out)
    return out


def _import(engine: Engine, rules: RuleBook, lines: list[HistoryEvent]) -> Any:
    ingestor = _ingestor(engine, rules)
    importer = HistoryImport(ingestor, rules.workspace.sites["demo"], clock=lambda: NOW)

    async def run() -> Any:
        summary = await importer.run(enumerate(lines, 1))
        await ingestor.writer.aclose()
        return summary

    return asyncio.run(run())


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Engine, RuleBook]]:
    tmp = tmp_path_factory.mktemp("imports")
    ws = load_workspace(_workspace(tmp / "ws"))
    sessions = list(generate(5, start_ms=START, days=3, visitors_per_day=60))
    shifts: dict[str, int] = {}
    batches = [_as_sent(sb, shifts) for sb in to_batches(sessions)]
    engines = []
    for name in ("live", "imported"):
        engine = make_engine(f"sqlite:///{tmp / name}.db")
        migrate(engine)
        engines.append(engine)
    live_rules, import_rules = RuleBook(ws, engines[0]), RuleBook(ws, engines[1])
    _live(engines[0], live_rules, batches)
    summary = _import(engines[1], import_rules, _lines(batches))
    assert summary.refused == 0, summary.problems
    assert summary.imported == sum(len(sb.batch.events) for sb in batches)
    yield engines[0], engines[1], import_rules
    for e in engines:
        e.dispose()


def _rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(text(sql)))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT visitor_id, ts, event_id, type, session_id, url, name, query, data FROM events",
        "SELECT id, visitor_id, number, started_at, last_event_at, event_count, page_count, "
        "landing_url, referrer_domain, utm_source, utm_campaign, device_type, locale, "
        "timezone FROM sessions",
        # first_seen_at differs: live, the first batch's arrival; imported, its first event
        # (test below).
        "SELECT id, last_visit_at, session_count, customer_id IS NULL FROM visitors",
        "SELECT session_id, outcome, visitor_id, achieved_at, value, event_id "
        "FROM outcome_achievements",
        "SELECT segment, change, at, expires_at, session_id, visitor_id FROM segment_changes",
        "SELECT kind, value FROM customer_identifiers",
    ],
    ids=["events", "sessions", "visitors", "outcomes", "segments", "identifiers"],
)
def test_an_import_stores_what_live_traffic_stored(
    both: tuple[Engine, Engine, RuleBook], sql: str
) -> None:
    live, imported, _ = both
    expected = _rows(live, sql)
    assert expected, "the simulated history must exercise this table"
    assert _rows(imported, sql) == expected


def test_an_imported_visitor_was_first_seen_at_its_first_event(
    both: tuple[Engine, Engine, RuleBook],
) -> None:
    _, imported, _ = both
    first = _rows(imported, "SELECT visitor_id, min(ts) FROM events GROUP BY visitor_id")
    assert _rows(imported, "SELECT id, first_seen_at FROM visitors") == first


def test_imported_visits_train_with_the_labels_live_visits_give(
    both: tuple[Engine, Engine, RuleBook],
) -> None:
    live, imported, rules = both
    rs = rules.ruleset
    spec = spec_for(rs)

    def labelled(engine: Engine) -> dict[str, list[tuple[str, int, float, float]]]:
        ex = build_examples(
            StoredVisits(engine), rs, spec, since_ms=START - DAY, until_ms=START + 5 * DAY
        )
        out = {}
        for outcome in [r.name for r in rs.outcomes]:
            o = ex.for_outcome(outcome)
            out[outcome] = sorted(
                (o.visit_ids[v], int(k), float(y), float(w))
                for v, k, y, w in zip(o.visit, o.prefix, o.y, o.weight, strict=True)
            )
        return out

    expected = labelled(live)
    assert any(y for rows in expected.values() for _, _, y, _ in rows), "no outcome achieved"
    assert labelled(imported) == expected


def test_imported_history_is_in_the_reports_rollups_at_once(
    both: tuple[Engine, Engine, RuleBook],
) -> None:
    """The rollups' background pass follows receipts and never sees history: the import
    recounts the quarters its visits span, so the rollups equal a rebuild from the raw
    tables (and the same visits as the sessions table)."""
    _, imported, _ = both
    sql = (
        "SELECT site_id, quarter, metric, coalesce(k1, ''), coalesce(k2, ''), "
        "coalesce(k3, ''), n, coalesce(x, 0) FROM report_rollups"
    )
    after_import = _rows(imported, sql)
    visits = _rows(imported, "SELECT sum(n) FROM report_rollups WHERE metric = 'visits'")
    assert visits == _rows(imported, "SELECT count(*) FROM sessions") != [(0,)]
    rollups.rebuild(imported)
    assert _rows(imported, sql) == after_import
