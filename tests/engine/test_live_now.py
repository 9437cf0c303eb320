"""Live Now's board: what a note keeps of a visitor, the idle window, the bound, and the
deltas a stream reads (changed since a version, gone since a version); in memory and
shared by several processes through Redis (real Redis, db 15, a namespace per test)."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import pytest

from opportune.core.actionmaps import Engagement, Showing
from opportune.core.events import BATCH_DECODER
from opportune.core.journey import Journey
from opportune.core.scores import Scores
from opportune.core.session import SessionTrack
from opportune.engine.answer import IngestResult
from opportune.engine.live import VisitorLive
from opportune.engine.live_now import LiveBoard, RedisLiveNow, Summary

MIN = 60_000
T0 = 1_700_000_000_000


def batch(vid: str, *events: dict) -> object:
    body = {"siteKey": "k", "visitorId": vid, "sentAt": T0, "events": list(events)}
    return BATCH_DECODER.decode(msgspec.json.encode(body))


def noted(board: LiveBoard, vid: str, at: int, *, url: str = "https://x.test/a") -> None:
    """A visitor noted as the pipeline does, with a journey, a score and an offer showing."""
    j = Journey(
        session_id=f"s-{vid}",
        started_at=at - 5_000,
        facts={"device": "mobile", "country": "ES", "utmCampaign": "spring", "landingUrl": "/"},
        url=url,
        scores={"loan": Scores(0.42, 0.5, 0.9, 0.9)},
    )
    state = VisitorLive(
        site_id="site",
        customer_id="c1",
        first_seen_at=0,
        track=SessionTrack(number=2, session_id=j.session_id, started_at=at - 5_000, last_at=at),
        journey=j,
        engagement=Engagement(showing=Showing("i1", "call-me", "chat", at, at + MIN)),
    )
    result = IngestResult(
        1, 0, [], vid, j.session_id, "c1", 2, segments=["mortgage"],
        scores={"loan": Scores(0.42, 0.5, 0.9, 0.9).to_json()},
    )  # fmt: skip
    ev = {"id": "e1", "ts": T0, "type": "page_view", "url": url, "title": "<b>Home</b>"}
    board.note("site", batch(vid, ev), state, result, at)  # type: ignore[arg-type]


def test_a_note_keeps_the_visitor_as_the_answer_and_the_journey_saw_them() -> None:
    board = LiveBoard()
    noted(board, "v1", 100 * MIN)
    rows, version = board.snapshot(100 * MIN)
    assert version == 1 and len(rows) == 1
    row = rows[0]
    assert row["visitorId"] == "v1" and row["siteId"] == "site"
    assert row["identified"] is True and row["customerId"] == "c1"
    assert row["url"] == "https://x.test/a" and row["title"] == "<b>Home</b>"
    assert row["visitNumber"] == 2 and row["returning"] is True
    assert row["lastAt"] - row["startedAt"] == 5_000
    assert row["device"] == "mobile" and row["country"] == "ES" and row["utmCampaign"] == "spring"
    assert "landingUrl" not in row  # only the facts a row shows
    assert row["segments"] == ["mortgage"] and row["scores"] == {"loan": 0.42}
    assert row["showing"] == {"map": "call-me", "channel": "chat"}


def test_visitors_idle_longer_than_the_window_are_gone() -> None:
    board = LiveBoard(window_ms=10 * MIN)
    noted(board, "old", 100 * MIN)
    noted(board, "new", 105 * MIN)
    assert [r["visitorId"] for r in board.snapshot(109 * MIN)[0]] == ["new", "old"]
    assert [r["visitorId"] for r in board.snapshot(111 * MIN)[0]] == ["new"]
    assert len(board) == 1
    noted(board, "old", 112 * MIN)  # back: on the board again
    assert len(board) == 2


def test_the_board_keeps_at_most_its_bound_dropping_the_least_recently_seen() -> None:
    board = LiveBoard(max_visitors=3)
    for i in range(5):
        board.put(Summary("s", f"v{i}", last_at=1_000 + i))
    board.put(Summary("s", "v2", last_at=2_000))  # seen again: now the newest
    board.put(Summary("s", "v5", last_at=2_001))
    assert [r["visitorId"] for r in board.snapshot(3_000)[0]] == ["v5", "v2", "v4"]


def test_changes_are_the_visitors_noted_and_gone_since_a_version() -> None:
    board = LiveBoard(window_ms=10 * MIN)
    noted(board, "a", 100 * MIN)
    noted(board, "b", 101 * MIN)
    _, version = board.snapshot(101 * MIN)
    assert board.changes(version, 101 * MIN) == ([], [], version)
    noted(board, "a", 102 * MIN, url="https://x.test/next")
    changed, gone, v2 = board.changes(version, 102 * MIN)  # type: ignore[misc]
    assert [c["visitorId"] for c in changed] == ["a"] and changed[0]["url"].endswith("/next")
    assert gone == [] and v2 > version
    changed, gone, v3 = board.changes(v2, 111 * MIN + 1)  # type: ignore[misc]
    assert changed == [] and gone == ["b"] and v3 > v2
    assert board.changes(v3, 111 * MIN + 1) == ([], [], v3)


def test_a_reader_too_far_behind_the_removals_kept_is_told_to_start_over() -> None:
    board = LiveBoard(max_visitors=2)
    for i in range(6):
        board.put(Summary("s", f"v{i}", last_at=i))
    assert board.changes(0, 10) is None
    _, version = board.snapshot(10)
    assert board.changes(version, 10) == ([], [], version)


def test_a_batch_without_a_page_view_keeps_the_page_of_the_same_visit() -> None:
    board = LiveBoard()
    noted(board, "v1", 100 * MIN)
    state = VisitorLive("site", None, 0, SessionTrack(number=1, session_id="s-v1"))
    result = IngestResult(1, 0, [], "v1", "s-v1", None, 1)
    board.note("site", batch("v1", {"id": "e2", "ts": T0, "type": "click"}), state, result, 0)  # type: ignore[arg-type]
    assert board.get("v1").url == "https://x.test/a"  # type: ignore[union-attr]


def test_a_bad_size_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        LiveBoard(window_ms=0)


REDIS_URL = "redis://127.0.0.1:6379/15"


def two_processes(**kw: int) -> tuple[LiveBoard, RedisLiveNow, LiveBoard, RedisLiveNow]:
    """Two server processes' boards sharing one Redis namespace."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    a, b = LiveBoard(**kw), LiveBoard(**kw)
    return (
        a,
        RedisLiveNow(a, REDIS_URL, prefix=prefix),
        b,
        RedisLiveNow(b, REDIS_URL, prefix=prefix),
    )


def test_with_redis_every_process_reads_every_processs_visitors() -> None:
    async def go() -> None:
        a, ra, b, rb = two_processes(window_ms=10 * MIN)
        try:
            noted(a, "va", 100 * MIN)
            noted(b, "vb", 100 * MIN + 1)
            assert (await ra.read_snapshot(100 * MIN))[0] == []  # nothing flushed yet
            assert await ra.flush(100 * MIN) == 1 and await rb.flush(100 * MIN) == 1
            assert await ra.flush(100 * MIN) == 0  # only what is new is written
            for reader in (ra, rb):
                rows, _cursor = await reader.read_snapshot(100 * MIN + 5)
                assert [r["visitorId"] for r in rows] == ["vb", "va"]
                assert rows[1] == a.snapshot(100 * MIN)[0][0]  # the summary as noted
            noted(a, "va", 104 * MIN, url="https://x.test/moved")
            await ra.flush(104 * MIN)
            changed, gone, _cursor2 = await rb.read_changes(104 * MIN - 500, 104 * MIN)  # type: ignore[misc]
            assert [c["visitorId"] for c in changed] == ["va"] and gone == []
            assert changed[0]["url"] == "https://x.test/moved"
            assert (await rb.read_one("va"))["url"] == "https://x.test/moved"  # type: ignore[index]
            # vb idle past the window: dropped by whichever process flushes next.
            await ra.flush(110 * MIN + 2)
            changed, gone, _ = await rb.read_changes(110 * MIN, 110 * MIN + 3)  # type: ignore[misc]
            assert changed == [] and gone == ["vb"]
            assert [r["visitorId"] for r in (await rb.read_snapshot(110 * MIN + 3))[0]] == ["va"]
            assert await rb.read_changes(0, 110 * MIN) is None  # too far behind: snapshot
        finally:
            await ra.aclose()
            await rb.aclose()

    asyncio.run(go())


def test_with_redis_the_bound_drops_the_least_recently_seen() -> None:
    async def go() -> None:
        a, ra, _b, rb = two_processes(max_visitors=2)
        try:
            for i in range(3):
                a.put(Summary("s", f"v{i}", session_id="x", last_at=T0 + i))
            await ra.flush(T0 + 10)
            rows, _ = await rb.read_snapshot(T0 + 10)
            assert [r["visitorId"] for r in rows] == ["v2", "v1"]
        finally:
            await ra.aclose()
            await rb.aclose()

    asyncio.run(go())


def test_the_flusher_writes_until_stopped_and_once_more_then() -> None:
    async def go() -> None:
        a, ra, _b, rb = two_processes()
        stop = asyncio.Event()
        try:
            task = asyncio.create_task(ra.run(stop))
            now = int(time.time() * 1000)
            a.put(Summary("s", "v1", session_id="x", last_at=now))
            for _ in range(100):  # written within a few flushes
                if (await rb.read_snapshot(now))[0]:
                    break
                await asyncio.sleep(0.05)
            assert [r["visitorId"] for r in (await rb.read_snapshot(now))[0]] == ["v1"]
            a.put(Summary("s", "v2", session_id="x", last_at=now))
            stop.set()
            await task
            assert len((await rb.read_snapshot(now))[0]) == 2
        finally:
            await ra.aclose()
            await rb.aclose()

    asyncio.run(go())
