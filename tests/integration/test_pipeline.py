"""The live pipeline on real stores: segments and outcomes per event, facts written with the
events, state rebuilt after a restart, rule changes applied to visitors already on the site.

Every test runs on memory and Redis live state, each with SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.core.events import Batch, Event, Identity
from opportune.engine.enrichment import GeoResolver
from opportune.engine.ingest import Ingestor
from opportune.engine.live import LiveStore, Loader, RedisLiveStore
from opportune.engine.rules import RuleBook
from opportune.settings import Settings
from opportune.store.schema import outcome_achievements, segment_changes
from opportune.store.writer import GroupCommitWriter
from opportune.workspace import load_workspace
from opportune.workspace.documents import SegmentDoc, Site

REDIS_URL = "redis://127.0.0.1:6379/15"
NOW = 1_760_000_000_000
MIN = 60_000
SITE = Site(name="demo", key="demo-site-key", origins=["https://bank.example"])
BASE = "https://bank.example/demo/"
PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.0.0 Mobile Safari/537.36"
)
DESKTOP = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.0.0 Safari/537.36"
)


class Harness:
    """An ingestor with the example workspace's rules and its own event loop."""

    def __init__(self, engine: Engine, live: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.prefix = live
        self.rules = RuleBook(load_workspace(EXAMPLE_WORKSPACE), engine)
        self.rules.refresh()
        self.writer = GroupCommitWriter(engine)
        self.ingestor = Ingestor(
            settings=Settings(database_url="sqlite://"),
            engine=engine,
            writer=self.writer,
            geo=GeoResolver(trust_headers=True, mmdb_path=None),
            live=None if live == "memory" else self._redis,
            rules=self.rules,
        )
        self.n = 0

    def _redis(self, loader: Loader) -> LiveStore:
        return RedisLiveStore(REDIS_URL, loader, prefix=self.prefix)

    def send(self, visitor: str, events: list[dict[str, Any]], ua: str = PHONE, now: int = NOW):
        evs = []
        for e in events:
            self.n += 1
            evs.append(Event(id=e.pop("id", f"{visitor}-{self.n}"), **e))
        batch = Batch(site_key=SITE.key, visitor_id=visitor, sent_at=now, events=evs)
        return self.loop.run_until_complete(
            self.ingestor.ingest(batch, SITE, now_ms=now, headers={"user-agent": ua}, peer=None)
        )

    def close(self) -> None:
        self.loop.run_until_complete(self.writer.aclose())
        self.loop.run_until_complete(self.ingestor.live.aclose())
        self.loop.close()


@pytest.fixture(params=["memory", "redis"])
def live(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield "memory"
        return
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(prefix + "*"):
        r.delete(key)
    r.close()


@pytest.fixture
def harness(engine: Engine, live: str) -> Iterator[Harness]:
    h = Harness(engine, live)
    yield h
    h.close()


def page(path: str, ts: int, **kw: Any) -> dict[str, Any]:
    return {"type": "page_view", "ts": ts, "url": BASE + path, **kw}


def changes(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as c:
        return [
            (r.segment, r.change)
            for r in c.execute(
                select(segment_changes.c.segment, segment_changes.c.change).order_by(
                    segment_changes.c.at, segment_changes.c.id
                )
            )
        ]


def test_a_mobile_campaign_visitor_struggles_then_applies(harness: Harness, engine: Engine):
    t = NOW - 10 * MIN
    landing = "index.html?utm_source=google&utm_medium=cpc&utm_campaign=loans"
    r = harness.send("v1", [page(landing, t), page("product.html", t + 20_000)])
    assert set(r.segments) == {"mobile-visitors", "paid-campaign"}
    assert r.outcomes == []
    r = harness.send(
        "v1",
        [
            page("apply.html", t + 60_000),
            {"type": "form_error", "ts": t + 90_000, "name": "loan", "url": BASE + "apply.html"},
            {"type": "form_error", "ts": t + 95_000, "name": "loan", "url": BASE + "apply.html"},
        ],
    )
    assert {"loan-shoppers", "loan-form-strugglers", "mobile-loan-strugglers"} <= set(r.segments)
    r = harness.send(
        "v1",
        [
            {
                "type": "custom",
                "ts": t + 200_000,
                "name": "loan_submitted",
                "attributes": {"amount": 12000},
            },
            page("confirmation.html", t + 201_000),
        ],
    )
    assert r.outcomes == ["loan_submitted"]
    r = harness.send("v1", [page("account.html", t + 400_000)])
    assert "loan-form-strugglers" not in r.segments
    with engine.connect() as c:
        won = c.execute(select(outcome_achievements)).all()
    assert [(w.outcome, w.value, w.achieved_at) for w in won] == [
        ("loan_submitted", 12000.0, t + 200_000)
    ]
    # The strugglers' 5-minute window passed with the last event: they left, recorded.
    assert ("loan-form-strugglers", "left") in changes(engine)
    entered = [s for s, ch in changes(engine) if ch == "entered"]
    assert sorted(entered) == sorted(
        [
            "mobile-visitors",
            "paid-campaign",
            "loan-shoppers",
            "loan-form-strugglers",
            "mobile-loan-strugglers",
        ]
    )


def test_a_restart_rebuilds_the_visit_without_recording_anything_twice(
    engine: Engine, live: str
) -> None:
    t = NOW - 5 * MIN
    h = Harness(engine, live)
    try:
        h.send("v2", [page("index.html?utm_medium=cpc", t)])
        h.send(
            "v2",
            [
                {
                    "type": "search",
                    "ts": t + 1000,
                    "query": "Travel alert abroad",
                    "url": BASE + "search.html",
                }
            ],
        )
    finally:
        h.close()
    if live != "memory":  # Redis keeps the state across processes: drop it to force a rebuild
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(live + "*"):
            r.delete(key)
        r.close()
    before = changes(engine)
    h2 = Harness(engine, live)
    try:
        r = h2.send("v2", [page("help.html", t + 2000)])
        assert set(r.segments) == {"mobile-visitors", "paid-campaign", "travel-alert-searchers"}
        assert changes(engine) == before
    finally:
        h2.close()


def test_a_new_segment_applies_at_once_to_a_visitor_on_the_site(harness: Harness, engine: Engine):
    t = NOW - 5 * MIN
    harness.send(
        "v3",
        [
            page("index.html", t),
            {"type": "search", "ts": t + 1000, "query": "mortgage", "url": BASE},
        ],
    )
    assert "mortgage-searchers" not in harness.send("v3", [page("help.html", t + 2000)]).segments
    doc = SegmentDoc.model_validate(
        {"kind": "segment", "name": "mortgage-searchers", "condition": {"searched": "mortgage"}}
    )
    harness.rules.put(doc, now_ms=NOW)
    # The search happened before the segment existed: the visit's history counts.
    r = harness.send("v3", [page("product.html", t + 3000)])
    assert "mortgage-searchers" in r.segments
    assert changes(engine).count(("mortgage-searchers", "entered")) == 1


def test_a_customer_segment_follows_the_customer_to_another_device(
    harness: Harness, engine: Engine
) -> None:
    t = NOW - 20 * MIN
    ident = {"type": "identify", "identity": Identity(email="Ana@Example.com")}
    harness.send(
        "phone",
        [
            page("index.html", t),
            {"type": "custom", "ts": t + 1000, "name": "cart_add", "attributes": {"value": 35}},
            {"type": "idle", "ts": t + 60_000},
            {**ident, "ts": t + 61_000},
        ],
    )
    with engine.connect() as c:
        assigned = c.execute(
            select(segment_changes.c.segment, segment_changes.c.expires_at).where(
                segment_changes.c.change == "assigned"
            )
        ).all()
    assert [(a.segment, a.expires_at) for a in assigned] == [
        ("cart-abandoners", t + 60_000 + 7 * 86_400_000)
    ]
    # A laptop, anonymous first: not in it; once the same customer signs in, it is.
    r = harness.send("laptop", [page("index.html", NOW - MIN)], ua=DESKTOP)
    assert "cart-abandoners" not in r.segments
    r = harness.send("laptop", [{**ident, "ts": NOW - MIN + 1000}], ua=DESKTOP)
    assert r.customer_id is not None
    r = harness.send("laptop", [page("product.html", NOW - MIN + 2000)], ua=DESKTOP)
    assert "cart-abandoners" in r.segments
    assert "mobile-visitors" not in r.segments


def test_a_segment_sees_the_customer_identified_in_the_same_batch(
    harness: Harness, engine: Engine
) -> None:
    # Identity is resolved before the rules step: a segment on a customer trait holds on
    # the very event that identifies a known customer, not only on a later batch.
    doc = SegmentDoc.model_validate(
        {
            "kind": "segment",
            "name": "gold-customers",
            "condition": {"attribute": "traits.tier", "equals": "gold"},
        }
    )
    harness.rules.put(doc, now_ms=NOW)
    t = NOW - 20 * MIN
    ident = {"type": "identify", "identity": Identity(email="gold@example.com")}
    r = harness.send(
        "desk", [page("index.html", t), {**ident, "ts": t + 1000, "traits": {"tier": "gold"}}]
    )
    assert "gold-customers" in r.segments
    # Another device, anonymous until this batch; its identify carries no traits.
    r = harness.send(
        "tablet", [page("index.html", NOW - MIN), {**ident, "ts": NOW - MIN + 1000}], ua=DESKTOP
    )
    assert r.customer_id is not None
    assert "gold-customers" in r.segments
    assert ("gold-customers", "entered") in changes(engine)[-1:]


def test_a_broken_rule_does_not_break_ingestion(harness: Harness, engine: Engine) -> None:
    seg = harness.rules.ruleset.segment_by_name["paid-campaign"]

    def explode(*_a: Any) -> bool:
        raise RuntimeError("boom")

    object.__setattr__(seg.condition, "holds", explode)
    r = harness.send("v4", [page("index.html?utm_medium=cpc", NOW - 1000)])
    assert r.accepted == 1
    assert "mobile-visitors" in r.segments and "paid-campaign" not in r.segments


def test_export_holds_the_facts_and_erase_removes_them(harness: Harness, engine: Engine) -> None:
    from opportune.store.gdpr import erase_customer, export_customer
    from opportune.store.schema import action_events, event_ids

    t = NOW - 5 * MIN
    r = harness.send(
        "gd1",
        [
            page("index.html?utm_medium=cpc", t),
            {"type": "identify", "ts": t + 1, "identity": Identity(email="gdpr@example.com")},
            {"type": "custom", "ts": t + 2, "name": "quote_requested", "attributes": {"amount": 5}},
        ],
    )
    assert r.outcomes == ["quote_requested"] and r.customer_id
    with engine.connect() as c:
        data = export_customer(c, r.customer_id)
    assert {x["segment"] for x in data["segmentChanges"]} >= {"paid-campaign"}
    assert [o["outcome"] for o in data["outcomes"]] == ["quote_requested"]
    with engine.begin() as c:
        erase_customer(c, r.customer_id, now_ms=NOW)
    with engine.connect() as c:
        # The events' exactly-once keys name the visitor: they go with the events.
        for table in (segment_changes, outcome_achievements, action_events, event_ids):
            left = c.execute(select(table).where(table.c.visitor_id == "gd1")).all()
            assert left == [], table.name
