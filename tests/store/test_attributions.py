"""Outcome attributions in the store, on SQLite and PostgreSQL: duplicates found by id,
conversations matched to the agent that handled them, records stored with touchpoints."""

from __future__ import annotations

from sqlalchemy import Engine, select

from opportune.core.kpis import Touchpoint
from opportune.store import attributions as store
from opportune.store import interactions
from opportune.store.schema import attribution_touchpoints, outcome_attributions


def record(rid: str, *convs: str) -> store.AttributionRecord:
    return store.AttributionRecord(
        id=rid,
        outcome_id="kpi-1",
        customer_id="c1",
        external_contact_id=None,
        value=120.0,
        created_ms=9_000,
        touchpoints=tuple(Touchpoint(c, "ana", "chat", 0.5, 8_000) for c in convs),
    )


def test_records_are_stored_with_their_touchpoints_and_known_after(engine: Engine) -> None:
    with engine.begin() as c:
        assert store.known_ids(c, ["a1", "a2"]) == set()
        store.insert(c, [record("a1", "i1", "i2")], received_ms=10_000)
    with engine.connect() as c:
        assert store.known_ids(c, ["a1", "a2"]) == {"a1"}
        att = c.execute(select(outcome_attributions)).one()
        assert (att.outcome_id, att.customer_id, att.value, att.created_at, att.received_at) == (
            "kpi-1",
            "c1",
            120.0,
            9_000,
            10_000,
        )
        tps = c.execute(
            select(
                attribution_touchpoints.c.attribution_id,
                attribution_touchpoints.c.conversation_id,
                attribution_touchpoints.c.agent_id,
                attribution_touchpoints.c.medium,
                attribution_touchpoints.c.value_share,
                attribution_touchpoints.c.at,
            ).order_by(attribution_touchpoints.c.conversation_id)
        ).all()
        assert [tuple(t) for t in tps] == [
            ("a1", "i1", "ana", "chat", 0.5, 8_000),
            ("a1", "i2", "ana", "chat", 0.5, 8_000),
        ]


def test_many_ids_are_looked_up_in_chunks(engine: Engine) -> None:
    ids = [f"a{i}" for i in range(1_200)]
    with engine.begin() as c:
        store.insert(c, [record(ids[0]), record(ids[-1])], received_ms=1)
        assert store.known_ids(c, ids) == {ids[0], ids[-1]}


def test_conversations_are_matched_to_the_agent_that_handled_them(engine: Engine) -> None:
    with engine.begin() as c:
        for iid in ("i1", "i2"):
            interactions.insert(
                c,
                interactions.NewInteraction(iid, "loans", "chat", "standard", {}),
                now_ms=1_000,
            )
        interactions.assign(
            c, interactions.Assignment("i1", "ana", "standard", 1.0, "", (), ()), now_ms=1_100
        )
    with engine.connect() as c:
        assert store.handled_by(c, ["i1", "i2", "nope", "i1"]) == {"i1": "ana", "i2": None}
        assert store.handled_by(c, []) == {}


def test_a_record_stored_by_another_request_meanwhile_is_a_duplicate_not_an_error(
    engine: Engine,
) -> None:
    """Two requests check, find nothing, and insert the same record at once: the database's
    key decides; the second stores nothing and says so (it used to fail with a 5xx)."""
    import threading

    rec = record("r-race")
    inserted = threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        with engine.begin() as c:
            results["first"] = store.insert(c, [rec], received_ms=1)
            inserted.set()
            threading.Event().wait(0.3)  # still uncommitted while the second tries

    def second() -> None:
        inserted.wait(5)
        try:
            with engine.begin() as c:
                results["second"] = store.insert(c, [rec], received_ms=2)
        except Exception as exc:
            results["second"] = exc

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"first": {"r-race"}, "second": set()}
    with engine.connect() as c:
        assert len(c.execute(select(outcome_attributions)).all()) == 1
        assert len(c.execute(select(attribution_touchpoints)).all()) == len(rec.touchpoints)
