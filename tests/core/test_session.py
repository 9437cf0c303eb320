"""Session placement rules: a table of cases and a property against the definition."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opportune.core.session import SessionTrack, landing_attributes, place, session_id_for

T = 20 * 60_000  # the default timeout


def numbers(times: list[int]) -> list[int]:
    """Visit number of each event when events are placed in the given order."""
    track = SessionTrack()
    out = []
    for ts in times:
        sid, _ = place(track, "v", ts, T)
        out.append({session_id_for("v", n): n for n in range(1, track.number + 1)}[sid])
    return out


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([0], [1]),
        ([0, T], [1, 1]),  # exactly the timeout: still the same visit
        ([0, T + 1], [1, 2]),  # one ms more: a new visit
        ([0, 10 * 60_000, 29 * 60_000], [1, 1, 1]),  # gaps under the timeout chain
        ([0, T + 1, 5 * 60_000], [1, 2, 1]),  # a late event joins the visit it belongs to
        ([0, T + 1, 2 * T + 2, 60_000], [1, 2, 3, 2]),  # only two visits are remembered
        ([T, T - 60_000], [1, 1]),  # slightly out of order within a visit
    ],
)
def test_placement_table(times: list[int], expected: list[int]) -> None:
    assert numbers(times) == expected


@given(st.lists(st.integers(min_value=0, max_value=3 * T), min_size=1, max_size=40))
def test_in_order_events_follow_the_gap_definition(gaps: list[int]) -> None:
    times = []
    t = 0
    for g in gaps:
        t += g
        times.append(t)
    expected, n, prev = [], 0, None
    for ts in times:
        if prev is None or ts - prev > T:
            n += 1
        expected.append(n)
        prev = ts
    assert numbers(times) == expected


@given(st.lists(st.integers(min_value=0, max_value=10 * T), min_size=1, max_size=40))
def test_visit_numbers_never_skip_and_ids_are_stable(times: list[int]) -> None:
    placed = numbers(times)
    assert sorted(set(placed)) == list(range(1, max(placed) + 1))
    assert numbers(times) == placed


def test_landing_attributes_ignore_internal_referrer_and_bad_urls() -> None:
    a = landing_attributes("https://shop.example/a?utm_source=x", "https://shop.example/b")
    assert (a["utm_source"], a["referrer_domain"], a["referrer"]) == ("x", None, None)
    b = landing_attributes("not a url", "http://[bad")
    assert b["referrer_domain"] is None and b["utm_campaign"] is None


def test_a_placement_names_the_session_and_whether_it_starts() -> None:
    track = SessionTrack()
    first = place(track, "v", 0, T)
    assert first.session_id == session_id_for("v", 1) and first.new
    assert place(track, "v", 1000, T) == (first.session_id, False)
