"""The interaction lifecycle in the store, on SQLite and PostgreSQL: arrive, hold,
assign, end or abandon, and the agents' live state beside it."""

from __future__ import annotations

import json

from sqlalchemy import Engine, select

from opportune.store import interactions as store
from opportune.store.schema import queue_presence


def new(iid: str, **kw: object) -> store.NewInteraction:
    fields: dict[str, object] = {
        "id": iid,
        "queue": "loans",
        "medium": "chat",
        "arm": "standard",
        "features": {"identified": 1.0},
    }
    return store.NewInteraction(**{**fields, **kw})  # type: ignore[arg-type]


def test_an_interaction_arrives_waiting_with_its_features(engine: Engine) -> None:
    with engine.begin() as c:
        assert not store.exists(c, "i1")
        store.insert(c, new("i1", language="es", priority=3, customer_id="c1"), now_ms=1_000)
        assert store.exists(c, "i1")
    with engine.connect() as c:
        row = store.get(c, "i1")
        assert row is not None
        assert (row.status, row.arrived_at, row.language, row.priority) == (
            "waiting",
            1_000,
            "es",
            3,
        )
        assert json.loads(row.features) == {"identified": 1.0}
        assert [r.id for r in store.waiting(c)] == ["i1"]
        assert store.waiting_count(c) == 1
        assert store.get(c, "nope") is None


def test_assignment_stores_the_decision_and_the_agents_turn(engine: Engine) -> None:
    with engine.begin() as c:
        store.set_presence(c, "ana", "available", now_ms=500)
        store.insert(c, new("i1"), now_ms=1_000)
        store.lock_dispatch(c)
        store.hold(c, "i1", since_ms=1_500)
        store.assign(
            c,
            store.Assignment(
                "i1", "ana", "predictive", 0.8, "x" * 600, (("ana", 0.7), ("bo", 0.2)), ("ana",)
            ),
            now_ms=2_000,
        )
    with engine.connect() as c:
        row = store.get(c, "i1")
        assert row is not None
        assert (row.status, row.agent_id, row.assigned_at, row.held_since) == (
            "assigned",
            "ana",
            2_000,
            1_500,
        )
        assert (row.method, row.propensity, len(row.why)) == ("predictive", 0.8, 500)
        assert json.loads(row.scores) == [["ana", 0.7], ["bo", 0.2]]
        assert json.loads(row.candidates) == ["ana"]
        assert store.agent_states(c)["ana"].last_assigned == 2_000
        assert store.agent_loads(c) == {"ana": {"chat": 1}}
        assert store.waiting(c) == [] and store.waiting_count(c) == 0


def test_an_assignment_never_takes_an_interaction_that_no_longer_waits(engine: Engine) -> None:
    with engine.begin() as c:
        store.insert(c, new("i1"), now_ms=1_000)
        store.finish(c, "i1", status="abandoned", now_ms=1_100)
        made = store.assign(
            c, store.Assignment("i1", "ana", "standard", 1.0, "", (), ()), now_ms=1_200
        )
        # Said, so a pass that lost the race to another does not announce it.
        assert made is False
        store.insert(c, new("i2"), now_ms=1_000)
        first = store.Assignment("i2", "ana", "standard", 1.0, "", (), ())
        second = store.Assignment("i2", "ben", "standard", 1.0, "", (), ())
        assert store.assign(c, first, now_ms=1_300) is True
        assert store.assign(c, second, now_ms=1_301) is False
    with engine.connect() as c:
        row = store.get(c, "i1")
        assert row is not None and (row.status, row.agent_id) == ("abandoned", None)
        assert store.get(c, "i2").agent_id == "ana"  # type: ignore[union-attr]


def test_queue_presence_written_at_once_by_two_processes_is_one_row(engine: Engine) -> None:
    """An update-then-insert let two agents becoming available at once both insert (a
    unique violation on PostgreSQL): one upsert statement now."""
    import threading

    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def write(n: int) -> None:
        try:
            start.wait()
            with engine.begin() as c:
                store.set_queue_presence(c, "loans", available=n, busy=0, waiting=0, now_ms=n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as c:
        rows = c.execute(select(queue_presence)).all()
    assert len(rows) == 1 and rows[0].agents_available in {1, 2, 3, 4}


def test_presence_is_inserted_then_updated(engine: Engine) -> None:
    with engine.begin() as c:
        store.set_presence(c, "ana", "available", now_ms=100)
        store.set_presence(c, "ana", "away", now_ms=200)
    with engine.connect() as c:
        st = store.agent_states(c)["ana"]
        assert (st.presence, st.idle_since, st.last_assigned, st.updated_at) == (
            "away",
            100,
            0,
            200,
        )


def test_ending_the_last_interaction_makes_the_agent_idle(engine: Engine) -> None:
    with engine.begin() as c:
        store.set_presence(c, "ana", "available", now_ms=100)
        for iid in ("i1", "i2"):
            store.insert(c, new(iid, customer_id="c1"), now_ms=1_000)
            store.assign(c, store.Assignment(iid, "ana", "standard", 1.0, "", (), ()), now_ms=1_100)
        store.finish(c, "i1", status="ended", now_ms=2_000, wrap_up_code="sale")
        store.release_agent(c, "ana", now_ms=2_000)
        assert store.agent_states(c)["ana"].idle_since == 100  # still busy with i2
        store.finish(c, "i2", status="ended", now_ms=3_000)
        store.release_agent(c, "ana", now_ms=3_000)
    with engine.connect() as c:
        assert store.agent_states(c)["ana"].idle_since == 3_000
        row = store.get(c, "i1")
        assert row is not None and (row.status, row.ended_at, row.wrap_up_code) == (
            "ended",
            2_000,
            "sale",
        )
        assert store.ended_count(c, "c1") == 2
        assert store.ended_count(c, "someone else") == 0
        assert store.agent_loads(c) == {}


def test_service_window_reads_the_queues_recent_interactions(engine: Engine) -> None:
    with engine.begin() as c:
        store.insert(c, new("old"), now_ms=100)
        store.insert(c, new("new"), now_ms=5_000)
        store.insert(c, new("other", queue="cards"), now_ms=5_000)
        store.finish(c, "new", status="abandoned", now_ms=6_000)
    with engine.connect() as c:
        rows = store.since(c, "loans", 1_000)
    assert [(r.arrived_at, r.assigned_at, r.ended_at, r.status) for r in rows] == [
        (5_000, None, 6_000, "abandoned")
    ]
