"""``GET /metrics``: Prometheus' text format, and its figures move with what the server
does — events accepted, duplicate and refused by reason, batches and their latency,
decisions by map and state, visitors on Live Now, interactions waiting per queue."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from opportune.api.app import create_app
from opportune.settings import Settings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    # The example workspace: the demo site, its segments, action maps and queues.
    settings = Settings(database_url=db_url, data_dir=tmp_path, api_key="k")
    with TestClient(create_app(settings)) as c:
        yield c


def scrape(c: TestClient) -> Samples:
    r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def post(c: TestClient, visitor: str, events: list[dict[str, Any]], sent_at: int) -> Any:
    body = {"siteKey": "demo-site-key", "visitorId": visitor, "sentAt": sent_at, "events": events}
    r = c.post("/v1/events", content=json.dumps(body))
    assert r.status_code == 200, r.text
    return r.json()


def test_metrics_move_with_the_events_posted(client: TestClient) -> None:
    before = scrape(client)
    now = int(time.time() * 1000)
    visitor = f"metrics-{now}"
    events = [
        {"id": "a", "type": "page_view", "ts": now - 50, "url": "https://bank.example/help"},
        {"id": "b", "type": "search", "ts": now - 40, "query": "device activation"},
        {"id": "c", "type": "page_view", "ts": now - 30},  # no url: refused
        {"id": "d", "type": "click", "ts": now - 10 * 3600_000},  # too old: refused
    ]
    first = post(client, visitor, events, now)
    assert first["accepted"] == 2 and len(first["refused"]) == 2
    again = post(client, visitor, events[:2], now)  # the client resent: both duplicates
    assert again["duplicates"] == 2
    bad = client.post("/v1/events", content=b"{not json")
    assert bad.status_code == 400
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("opportune_events_total", result="accepted", reason="") == 2
    assert moved("opportune_events_total", result="duplicate", reason="") == 2
    assert moved("opportune_events_total", result="refused", reason="missing_field") == 1
    assert moved("opportune_events_total", result="refused", reason="too_old") == 1
    assert moved("opportune_event_batches_total", status="200") == 2
    assert moved("opportune_event_batches_total", status="400") == 1
    assert moved("opportune_event_batch_seconds_count") == 3
    assert moved("opportune_event_batch_seconds_sum") > 0
    # The search put the visitor in a segment that an action map acts on: one decision
    # record at least (qualified, or holdout for the visitors held out).
    decided = sum(
        v - before.get(k, 0.0)
        for k, v in after.items()
        if k[0] == "opportune_decisions_total" and ("map", "device-activation-help") in k[1]
    )
    assert decided >= 1
    assert value(after, "opportune_live_visitors") >= 1
    # Every queue of the workspace is listed, waiting or not.
    assert value(after, "opportune_queue_waiting", queue="loans") == 0
    assert ("opportune_queue_waiting", (("queue", "support"),)) in after
    assert ("opportune_webhooks_pending", ()) in after
    assert ("opportune_writer_backlog", ()) in after


def test_metrics_are_not_in_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/metrics" not in paths and "/readyz" not in paths


def test_a_database_away_is_counted_and_its_gauges_left_out(tmp_path: Path) -> None:
    db = tmp_path / "opportune.db"
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings)) as c:
        before = scrape(c)
        assert ("opportune_queue_waiting", (("queue", "loans"),)) in before
        c.app.ingestor.engine.dispose()
        db.rename(tmp_path / "elsewhere.db")
        db.mkdir()  # SQLite can no longer open it
        try:
            during = scrape(c)
        finally:
            db.rmdir()
            (tmp_path / "elsewhere.db").rename(db)
    labels = {"backend": "database", "where": "metrics"}
    errors = "opportune_storage_errors_total"
    assert value(during, errors, **labels) - value(before, errors, **labels) == 1
    assert not any(name == "opportune_queue_waiting" for name, _ in during)
    assert ("opportune_live_visitors", ()) in during  # the board is in memory: still there
