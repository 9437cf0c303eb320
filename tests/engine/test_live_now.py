"""Live Now's board: what a note keeps of a visitor, the idle window, the bound, and the
deltas a stream reads (changed since a version, gone since a version)."""

from __future__ import annotations

import msgspec
import pytest

from opportune.core.actionmaps import Engagement, Showing
from opportune.core.events import BATCH_DECODER
from opportune.core.journey import Journey
from opportune.core.scores import Scores
from opportune.core.session import SessionTrack
from opportune.engine.answer import IngestResult
from opportune.engine.live import VisitorLive
from opportune.engine.live_now import LiveBoard, Summary

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
