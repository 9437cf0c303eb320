"""Conversations in the database, on SQLite and PostgreSQL: messages stored once in one order
however many writers append at once, states moved only as the core allows, GDPR coverage."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, select

from opportune.core.conversations import ConversationError, draft
from opportune.store import conversations as store
from opportune.store.schema import conversation_messages, conversations, metadata


def _open(engine: Engine, cid: str = "c1", *, state: str = "bot", visitor: str = "v1") -> None:
    with engine.begin() as conn:
        store.open_conversation(
            conn,
            conversation_id=cid,
            site_id="s",
            visitor_id=visitor,
            customer_id=None,
            state=state,  # type: ignore[arg-type]
            now_ms=1000,
            queue="sales",
            language="en",
            registration={"name": "Ana", "email": "ana@example.com"},
        )


def test_the_migration_creates_the_tables_the_schema_declares(engine: Engine) -> None:
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    mine = ("conversation", "'users'", "user_sessions")
    ours = [d for d in diffs if any(t in repr(d) for t in mine)]
    assert ours == []


def test_a_resend_is_answered_with_the_stored_message_and_stored_once(engine: Engine) -> None:
    _open(engine)
    with engine.begin() as conn:
        first = store.append(conn, "c1", draft("m1", "visitor", "hello"), now_ms=2000)
    with engine.begin() as conn:
        again = store.append(conn, "c1", draft("m1", "visitor", "hello"), now_ms=9000)
        other = store.append(
            conn,
            "c1",
            draft("m2", "bot", "hi, how can I help?"),
            now_ms=2100,
            author="welcome",
            payload={"buttons": ["Loans", "Cards"]},
        )
    assert not first.duplicate and again.duplicate
    assert again.message == first.message and first.message.seq == 1
    assert other.message.seq == 2
    with engine.connect() as conn:
        msgs = store.after(conn, "c1")
        assert [m.seq for m in msgs] == [1, 2]
        assert msgs[1].payload == {"buttons": ["Loans", "Cards"]} and msgs[1].author == "welcome"
        assert [m.text for m in store.after(conn, "c1", 1)] == ["hi, how can I help?"]
        # A visitor's message is a sign of life.
        assert store.get(conn, "c1").visitor_seen_at == 2000


def test_concurrent_appends_get_contiguous_seqs_and_resends_stay_single(engine: Engine) -> None:
    _open(engine, state="queued")
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(15):
                # Every writer also resends the shared ids a few times: stored once in all.
                cid = f"w{w}-{i}" if i % 5 else f"shared-{i}"
                with engine.begin() as conn:
                    store.append(conn, "c1", draft(cid, "visitor", f"{w}:{i}"), now_ms=5000 + i)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        seqs = [m.seq for m in store.after(conn, "c1")]
        n = conn.execute(select(func.count()).select_from(conversation_messages)).scalar_one()
        ids = conn.execute(select(conversation_messages.c.client_id)).scalars().all()
    expected = 4 * 12 + 3  # 12 own ids per writer, 3 shared ids
    assert n == expected == len(set(ids))
    assert seqs == list(range(1, expected + 1))
    with engine.connect() as conn:
        assert store.get(conn, "c1").last_seq == expected


def test_states_move_only_as_the_core_allows(engine: Engine) -> None:
    _open(engine)
    with engine.begin() as conn:
        assert store.transition(conn, "c1", "escalate", now_ms=2000).state == "queued"
        conv = store.transition(conn, "c1", "route", now_ms=2100, agent_id="ana")
        assert (conv.state, conv.agent_id) == ("assigned", "ana")
        assert store.transition(conn, "c1", "accept", now_ms=2200).state == "active"
    with engine.begin() as conn, pytest.raises(ConversationError, match="cannot route"):
        store.transition(conn, "c1", "route", now_ms=2300)
    with engine.begin() as conn, pytest.raises(ConversationError, match="is active now"):
        store.transition(conn, "c1", "escalate", now_ms=2300, expect=["bot"])
    with engine.begin() as conn:
        conv = store.transition(conn, "c1", "end", now_ms=3000)
        assert (conv.state, conv.ended_at) == ("wrap_up", 3000)
        with pytest.raises(ConversationError, match="takes no messages"):
            store.append(conn, "c1", draft("late", "visitor", "still there?"), now_ms=3100)
        conv = store.transition(conn, "c1", "wrap_up", now_ms=4000, wrap_up_code="sold", rating=5)
        assert (conv.state, conv.ended_at, conv.wrap_up_code) == ("closed", 3000, "sold")


def test_an_unknown_or_foreign_conversation_is_not_found(engine: Engine) -> None:
    _open(engine)
    with engine.begin() as conn:
        with pytest.raises(store.NotFound):
            store.append(conn, "nope", draft("m1", "visitor", "hi"), now_ms=1)
        with pytest.raises(store.NotFound):
            store.get(conn, "c1", site_id="another-site")
        with pytest.raises(store.NotFound):
            store.transition(conn, "nope", "end", now_ms=1)


def test_read_marks_only_move_forward_and_never_past_the_last_message(engine: Engine) -> None:
    _open(engine)
    with engine.begin() as conn:
        for i in range(3):
            store.append(conn, "c1", draft(f"m{i}", "bot", f"line {i}"), now_ms=2000 + i)
        store.read(conn, "c1", reader="visitor", seq=2)
        store.read(conn, "c1", reader="visitor", seq=1)  # late receipt
        store.read(conn, "c1", reader="agent", seq=9)  # beyond the last message: ignored
        conv = store.get(conn, "c1")
        assert (conv.visitor_read_seq, conv.agent_read_seq) == (2, 0)
        with pytest.raises(ConversationError, match="reader"):
            store.read(conn, "c1", reader="bot", seq=1)


def test_visitors_silent_past_the_grace_are_found_and_leave(engine: Engine) -> None:
    _open(engine, "quiet", visitor="v1")
    _open(engine, "alive", visitor="v2")
    with engine.begin() as conn:
        store.seen(conn, "alive", now_ms=60_000)
        store.seen(conn, "alive", now_ms=50_000)  # out of order: never goes back
        found = store.gone_visitors(conn, now_ms=70_000, grace_ms=30_000)
        assert [c.id for c in found] == ["quiet"]
        assert store.transition(conn, "quiet", "leave", now_ms=70_000).state == "abandoned"
        assert store.gone_visitors(conn, now_ms=70_000, grace_ms=30_000) == []


def test_export_covers_every_device_and_erase_removes_the_words(engine: Engine) -> None:
    _open(engine, "c1", visitor="phone")
    _open(engine, "c2", visitor="laptop")
    _open(engine, "c3", visitor="someone-else")
    with engine.begin() as conn:
        store.append(conn, "c1", draft("m1", "visitor", "my card is lost"), now_ms=2000)
        store.append(conn, "c2", draft("m1", "visitor", "following up"), now_ms=3000)
    with engine.connect() as conn:
        exported = store.transcripts(conn, ["phone", "laptop"])
    assert {c["id"] for c in exported} == {"c1", "c2"}
    texts = {m["text"] for c in exported for m in c["messages"]}
    assert texts == {"my card is lost", "following up"}
    assert exported[0]["registration"] == {"name": "Ana", "email": "ana@example.com"}
    with engine.begin() as conn:
        assert store.erase(conn, ["phone", "laptop"]) == 2
    with engine.connect() as conn:
        assert store.transcripts(conn, ["phone", "laptop"]) == []
        left = conn.execute(select(conversations.c.id)).scalars().all()
        assert left == ["c3"]
        n = conn.execute(select(func.count()).select_from(conversation_messages)).scalar_one()
        assert n == 0
