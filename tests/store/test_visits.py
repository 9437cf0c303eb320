"""Stored visits read back for training, with what the pipeline knew when each began; the
counts readiness is judged on; and the one session row builder — on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from opportune.engine.enrichment import Device, Geo
from opportune.store.facts import active_assignments, session_facts
from opportune.store.schema import (
    customers,
    events,
    identity_log,
    outcome_achievements,
    segment_changes,
    sessions,
    visitors,
)
from opportune.store.visits import (
    StoredVisits,
    history_counts,
    session_row,
    stored_visit_count,
    stored_visits,
)

SITE = "demo"


def _session(sid: str, vid: str, number: int, start: int, end: int, **cols: Any) -> dict:
    row = session_row(
        session_id=sid, site_id=SITE, visitor_id=vid, customer_id=cols.pop("customer_id", None),
        ts=start, number=number, **cols,
    )  # fmt: skip
    return {**row, "last_event_at": end}


def _event(sid: str, vid: str, eid: str, type_: str, ts: int, received: int) -> dict:
    return {
        "site_id": SITE, "visitor_id": vid, "session_id": sid, "event_id": eid, "type": type_,
        "ts": ts, "received_at": received, "seq": 0, "url": f"https://s.com/{eid}",
    }  # fmt: skip


def _history(engine: Engine, *, linked_at: int = 5000) -> None:
    """v1 visits twice: first anonymous (linked to c1 between the visits, which fills in
    customer_id on the first visit's row too), then identified. v2, c1's other device,
    was assigned to a customer-scope segment before the window."""
    landing = ("https://s.com/?utm_source=news", "https://www.google.com/")
    with engine.begin() as conn:
        conn.execute(customers.insert().values(id="c1", site_id=SITE, created_at=0, updated_at=0))
        for vid in ("v1", "v2"):
            conn.execute(
                visitors.insert().values(
                    id=vid, site_id=SITE, first_seen_at=0, last_visit_at=0, session_count=1,
                    customer_id="c1",
                )
            )  # fmt: skip
        conn.execute(
            sessions.insert(),
            [
                _session("s0", "v2", 1, 100, 200, customer_id="c1"),
                _session(
                    "s1", "v1", 1, 1000, 2000, customer_id="c1", landing=landing,
                    device=Device("mobile", "Mobile Safari", "iOS"),
                ),
                _session("s2", "v1", 2, 10_000, 11_000, customer_id="c1"),
            ],
        )  # fmt: skip
        conn.execute(
            events.insert(),
            [
                _event("s0", "v2", "e0", "page_view", 100, 100),
                _event("s1", "v1", "e1", "page_view", 1000, 1000),
                # Processed in arrival order: e2 arrived before e3 although its ts is later.
                _event("s1", "v1", "e2", "click", 1500, 1400),
                _event("s1", "v1", "e3", "click", 1200, 1600),
                _event("s2", "v1", "e4", "page_view", 10_000, 10_000),
            ],
        )
        conn.execute(
            outcome_achievements.insert().values(
                session_id="s1", outcome="signup", site_id=SITE, visitor_id="v1",
                achieved_at=1500, event_id="e2",
            )
        )  # fmt: skip
        conn.execute(
            identity_log.insert().values(
                at=linked_at, site_id=SITE, kind="link", visitor_id="v1", customer_id="c1",
                detail={},
            )
        )  # fmt: skip
        conn.execute(
            segment_changes.insert().values(
                site_id=SITE, segment="vip", change="assigned", at=150, expires_at=100_000,
                session_id="s0", visitor_id="v2", customer_id="c1",
            )
        )  # fmt: skip


def test_stored_visits_begin_with_what_the_pipeline_knew(engine: Engine) -> None:
    _history(engine)
    with engine.connect() as conn:
        first, second = stored_visits(conn, since_ms=900, until_ms=20_000)
    assert first.session_id == "s1" and first.visit_number == 1
    # Linked only after this visit: not identified, and none of the customer's segments.
    assert first.facts == {
        "device": "mobile",
        "browser": "Mobile Safari",
        "os": "iOS",
        "landingUrl": "https://s.com/?utm_source=news",
        "referrer": "https://www.google.com/",
        "referrerDomain": "www.google.com",
        "utmSource": "news",
    }
    assert first.assignments == {} and first.past_outcomes == {}
    assert first.previous_visit_at == 0
    assert [e.id for e in first.events] == ["e1", "e2", "e3"]
    assert second.facts == {"identified": True}
    assert second.previous_visit_at == 2000
    assert second.past_outcomes == {"signup": 1}
    assert second.assignments == {"vip": [150, 100_000]}
    assert second.merges == []


def test_a_visitor_identified_mid_visit_gets_its_customers_segments_from_the_next_batch(
    engine: Engine,
) -> None:
    _history(engine, linked_at=1450)  # after e2's batch was received, before e3's
    with engine.connect() as conn:
        first, _second = stored_visits(conn, since_ms=900, until_ms=20_000)
    assert "identified" not in first.facts and first.assignments == {}
    assert first.merges == [(2, {"vip": [150, 100_000]})]


def test_partitions_split_the_visits_and_the_counts_match(engine: Engine) -> None:
    _history(engine)
    with engine.connect() as conn:
        ids = [
            [v.session_id for v in stored_visits(conn, since_ms=0, until_ms=20_000, partition=p)]
            for p in ((0, 2), (1, 2))
        ]
        counts = history_counts(conn, since_ms=900, until_ms=20_000)
        total = stored_visit_count(conn, since_ms=0, until_ms=20_000, site_id=SITE)
        live = active_assignments(conn, visitor_id="v1", customer_id="c1", now_ms=20_000)
    assert ids == [["s0", "s2"], ["s1"]] and total == 3
    assert (counts.sessions, counts.achievements) == (2, {"signup": 1})
    assert (counts.first_at, counts.last_at) == (1000, 10_000)
    assert live == {"vip": [150, 100_000]}
    history = StoredVisits(engine)
    assert history.counts(since_ms=900, until_ms=20_000) == counts
    visits, settle = history.source(since_ms=900, until_ms=20_000)(0, 1)
    assert [v.session_id for v in visits] == ["s1", "s2"] and settle is None


def test_the_session_row_has_the_tables_columns_and_the_facts_serving_reads(
    engine: Engine,
) -> None:
    row = session_row(
        session_id="s", site_id=SITE, visitor_id="v", customer_id=None, ts=7, number=3,
        device=Device("desktop", "Chrome" * 20, "Linux"), geo=Geo("DE", "Berlin", "Berlin"),
        locale="de-DE", timezone="Europe/Berlin", landing=("https://s.com/?utm_medium=cpc", None),
    )  # fmt: skip
    assert set(row) <= {c.name for c in sessions.columns}
    assert len(row["browser"]) == 64
    assert session_facts(row) == {
        "device": "desktop",
        "browser": "Chrome" * 10 + "Chro",
        "os": "Linux",
        "country": "DE",
        "region": "Berlin",
        "city": "Berlin",
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
        "landingUrl": "https://s.com/?utm_medium=cpc",
        "utmMedium": "cpc",
    }
    with engine.begin() as conn:
        conn.execute(
            visitors.insert().values(
                id="v", site_id=SITE, first_seen_at=0, last_visit_at=0, session_count=1
            )
        )
        conn.execute(sessions.insert().values(**row))
