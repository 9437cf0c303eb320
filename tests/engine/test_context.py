"""The agent's context panel, on SQLite and PostgreSQL: a visit ingested through the real
Ingestor with the example workspace's rules, a conversation and its routed interaction
stored; the panel says who, what they did (and only what is new with a cursor), their
earlier visits and conversations, the bot's part and why this agent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.core.conversations import draft
from opportune.core.events import Batch, Event, Identity
from opportune.engine.context import BadSince, conversation_context
from opportune.engine.enrichment import GeoResolver
from opportune.engine.ingest import Ingestor
from opportune.engine.rules import RuleBook
from opportune.settings import Settings
from opportune.store import conversations as conv_store
from opportune.store import interactions as inter_store
from opportune.store.writer import GroupCommitWriter
from opportune.workspace import Workspace, load_workspace
from opportune.workspace.documents import Site

NOW = 1_760_000_000_000
MIN = 60_000
SITE = Site(name="demo", key="demo-site-key", origins=["https://bank.example"])
BASE = "https://bank.example/demo/"
PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.0.0 Mobile Safari/537.36"
)
HOSTILE = "<img src=x onerror=alert(1)>"


class Harness:
    def __init__(self, engine: Engine) -> None:
        self.loop = asyncio.new_event_loop()
        self.workspace: Workspace = load_workspace(EXAMPLE_WORKSPACE)
        self.rules = RuleBook(self.workspace, engine)
        self.rules.refresh()
        self.writer = GroupCommitWriter(engine)
        self.ingestor = Ingestor(
            settings=Settings(database_url="sqlite://"),
            engine=engine,
            writer=self.writer,
            geo=GeoResolver(trust_headers=True, mmdb_path=None),
            live=None,
            rules=self.rules,
        )
        self.n = 0

    def send(self, visitor: str, events: list[dict[str, Any]], now: int) -> Any:
        evs = []
        for e in events:
            self.n += 1
            evs.append(Event(id=f"{visitor}-{self.n}", **e))
        batch = Batch(site_key=SITE.key, visitor_id=visitor, sent_at=now, events=evs)
        return self.run(
            self.ingestor.ingest(batch, SITE, now_ms=now, headers={"user-agent": PHONE}, peer=None)
        )

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def context(self, cid: str, now: int, since: str | None = None) -> dict[str, Any]:
        return self.run(
            conversation_context(
                self.ingestor, self.rules, self.workspace, cid, now_ms=now, since=since
            )
        )

    def close(self) -> None:
        self.run(self.writer.aclose())
        self.run(self.ingestor.live.aclose())
        self.loop.close()


@pytest.fixture
def harness(engine: Engine) -> Iterator[Harness]:
    h = Harness(engine)
    yield h
    h.close()


def page(path: str, ts: int, **kw: Any) -> dict[str, Any]:
    return {"type": "page_view", "ts": ts, "url": BASE + path, **kw}


def _visits(h: Harness) -> None:
    """Yesterday a visit that reached an outcome; today a campaign visit that struggles."""
    y = NOW - 86_400_000
    h.send("v1", [page("index.html", y), page("product.html", y + 5000)], now=y + 6000)
    h.send(
        "v1",
        [{"type": "custom", "ts": y + 9000, "name": "quote_requested"}],
        now=y + 10_000,
    )
    t = NOW - 10 * MIN
    h.send(
        "v1",
        [
            page(
                "index.html?utm_source=google&utm_medium=cpc&utm_campaign=spring",
                t,
                title="Demo Bank",
            ),
            {"type": "search", "ts": t + 1000, "query": HOSTILE},
            {"type": "search", "ts": t + 2000, "query": "personal loan rates"},
            page("apply.html", t + 3000, title="Apply for a loan"),
            {
                "type": "form_error",
                "ts": t + 4000,
                "name": "loan",
                "attributes": {"field": "income"},
            },
            {"type": "form_error", "ts": t + 9000, "name": "loan"},
            {
                "type": "identify",
                "ts": t + 10_000,
                "identity": Identity(email="ana@example.com"),
                "traits": {"firstName": "Ana", "lastName": "García"},
            },
        ],
        now=t + 11_000,
    )


def _conversation(engine: Engine, cid: str, *, at: int, customer: str | None) -> None:
    with engine.begin() as conn:
        conv_store.open_conversation(
            conn,
            conversation_id=cid,
            site_id="demo",
            visitor_id="v1",
            customer_id=customer,
            state="bot",
            now_ms=at,
            queue="support",
            language="en",
            registration={"firstName": "Ana", "topic": HOSTILE},
        )
        conv_store.append(conn, cid, draft("b1", "bot", "Hi! How can I help?"), now_ms=at + 1)
        conv_store.append(conn, cid, draft("m1", "visitor", HOSTILE), now_ms=at + 2)
        conv_store.transition(conn, cid, "escalate", now_ms=at + 3)
        inter_store.insert(
            conn,
            inter_store.NewInteraction(
                id=cid,
                queue="support",
                medium="chat",
                arm="predictive",
                features={},
                customer_id=customer,
                visitor_id="v1",
            ),
            now_ms=at + 3,
        )
        inter_store.assign(
            conn,
            inter_store.Assignment(
                interaction_id=cid,
                agent_id="dev",
                method="predictive",
                propensity=0.8,
                why="highest predicted first-contact-resolution",
                scores=[("dev", 0.72), ("carla", 0.55)],
                candidates=["dev", "carla"],
            ),
            now_ms=at + 2003,
        )
        conv_store.transition(conn, cid, "route", now_ms=at + 2003, agent_id="dev")
        conv_store.append(conn, cid, draft("a1", "agent", "Hello, Dev here"), now_ms=at + 3000)


def test_the_panel_says_who_what_and_why_with_hostile_text_as_data(
    harness: Harness, engine: Engine
) -> None:
    _visits(harness)
    customer = harness.run(harness.ingestor.live.peek("v1", NOW)).customer_id
    assert customer is not None
    # An earlier conversation of the same visitor, closed with a wrap-up code.
    with engine.begin() as conn:
        conv_store.open_conversation(
            conn,
            conversation_id="old",
            site_id="demo",
            visitor_id="v1",
            customer_id=None,
            state="queued",
            now_ms=NOW - 86_000_000,
            queue="loans",
        )
        conv_store.transition(conn, "old", "route", now_ms=NOW - 85_999_000, agent_id="ana")
        conv_store.transition(conn, "old", "accept", now_ms=NOW - 85_998_000)
        conv_store.transition(conn, "old", "end", now_ms=NOW - 85_000_000)
        conv_store.transition(
            conn, "old", "wrap_up", now_ms=NOW - 84_999_000, wrap_up_code="loan-sold"
        )
    _conversation(engine, "c1", at=NOW - 5 * MIN, customer=customer)

    ctx = harness.context("c1", NOW)
    json.dumps(ctx)  # plain JSON all the way down
    who = ctx["who"]
    assert who["identified"] and who["customerId"] == customer
    assert who["name"] == "Ana García"
    assert {"kind": "email", "value": "ana@example.com"} in who["identifiers"]
    assert who["returning"] and who["visitNumber"] == 2 and who["visitsLast7Days"] == 2
    assert who["device"] == {"type": "mobile", "browser": "Chrome Mobile", "os": "Android"}
    assert who["campaign"]["source"] == "google" and who["campaign"]["campaign"] == "spring"
    assert who["landingPage"].endswith("utm_campaign=spring")

    items = ctx["timeline"]
    assert [i["at"] for i in items] == sorted(i["at"] for i in items)
    searches = [i for i in items if i["kind"] == "search"]
    assert searches[0]["query"] == HOSTILE  # the visitor's words, as data
    assert searches[0]["text"] == f"searched for '{HOSTILE}'"
    pages = [i for i in items if i["kind"] == "page_view"]
    assert [p["text"] for p in pages] == ["viewed 'Demo Bank'", "viewed 'Apply for a loan'"]
    assert pages[0]["durationMs"] == 3000 and "durationMs" not in pages[1]  # still there
    errors = [i["text"] for i in items if i["kind"] == "form_error"]
    assert errors == ["error on the loan form (income)", "error on the loan form"]
    segs = {(i["segment"], i["change"]) for i in items if i["kind"] == "segment"}
    assert ("loan-form-strugglers", "entered") in segs
    assert ("paid-campaign", "entered") in segs
    assert len({i["id"] for i in items}) == len(items)

    assert "loan-form-strugglers" in {s["name"] for s in ctx["segments"]}
    [past] = ctx["pastSessions"]
    assert past["outcomes"] == ["quote_requested"] and past["pages"] == 2
    [old] = ctx["pastConversations"]
    assert (old["queue"], old["agentName"], old["wrapUpCode"]) == (
        "loans",
        "Ana García",
        "loan-sold",
    )

    bot = ctx["bot"]
    assert bot["handled"]
    assert [(m["sender"], m["text"]) for m in bot["transcript"]] == [
        ("bot", "Hi! How can I help?"),
        ("visitor", HOSTILE),
    ]
    routing = ctx["routing"]
    assert routing["method"] == "predictive" and routing["agentName"] == "Dev Patel"
    assert routing["predicted"] == pytest.approx(0.72)
    assert routing["kpi"] == {
        "name": "first-contact-resolution",
        "type": "first_contact_resolution",
    }
    assert routing["waitedMs"] == 2000
    assert routing["text"] == (
        "chosen by predictive routing: the best predicted first contact resolution (72%)"
    )
    assert ctx["conversation"]["wrapUpCodes"] == ["resolved", "escalated", "follow-up"]


def test_since_returns_only_what_is_new(harness: Harness, engine: Engine) -> None:
    _visits(harness)
    _conversation(engine, "c2", at=NOW - 5 * MIN, customer=None)
    first = harness.context("c2", NOW)
    seen = {i["id"] for i in first["timeline"]}
    # Later: the visitor goes on browsing in the same visit.
    later = NOW + 30_000
    harness.send(
        "v1",
        [
            page("help.html", later - 1000),
            {"type": "search", "ts": later - 500, "query": "card activation"},
        ],
        now=later,
    )
    again = harness.context("c2", later + 1000, since=first["cursor"])
    new = [i for i in again["timeline"] if i["id"] not in seen]
    events = [i for i in new if i["id"].startswith("e:")]
    assert [i["kind"] for i in events] == ["page_view", "search"]
    assert events[1]["text"] == "searched for 'card activation'"
    assert all(i["at"] >= later - 1000 for i in new)  # what it led to, nothing older
    # A refresh carries what moves, not the whole panel again.
    assert "who" not in again and "pastSessions" not in again
    assert len(again["timeline"]) < len(first["timeline"]) + 2
    assert int(again["cursor"]) == later + 1000


def test_unknown_conversations_and_bad_cursors_are_refused(harness: Harness) -> None:
    with pytest.raises(conv_store.NotFound):
        harness.context("nope", NOW)
    _visits(harness)
    with pytest.raises(BadSince):
        harness.context("nope", NOW, since="abc")
