"""A visitor's browser clock: the skew estimate moves as the rules say, and events are
never placed against the order the snippet numbered them in, whatever each batch's
latency or the order batches arrive in."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opportune.core.client_clock import RESET_MS, STEP_MS, ClientClock


def test_the_skew_takes_a_smaller_offset_at_once_and_a_larger_one_by_a_bounded_step() -> None:
    c = ClientClock()
    assert c.observe(2_000) == 2_000  # the first observation
    assert c.observe(150) == 150  # less time on the network: a better estimate
    assert c.observe(150 + 5 * STEP_MS) == 150 + STEP_MS  # a slow batch: one step up
    assert c.observe(150 + 5 * STEP_MS) == 150 + 2 * STEP_MS


def test_an_offset_far_from_the_estimate_means_the_clock_was_set() -> None:
    c = ClientClock()
    c.observe(100)
    assert c.observe(100 + RESET_MS + 1) == 100 + RESET_MS + 1
    assert c.observe(-RESET_MS) == -RESET_MS


def test_events_without_a_number_are_placed_as_corrected() -> None:
    c = ClientClock()
    c.order(seq=5, ts=1_000)
    assert c.order(seq=None, ts=10) == 10


batches = st.lists(
    st.tuples(
        st.integers(-10_000, 10_000),  # the batch's latency on top of the browser's skew
        st.lists(st.integers(0, 5_000), min_size=1, max_size=5),  # gaps between events
    ),
    min_size=1,
    max_size=12,
)


# A loaded shared machine can stall a draw for seconds: that is not the code's slowness.
LOADED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@LOADED
@given(batches, st.integers(-3_600_000, 3_600_000))
def test_batches_in_order_are_stored_in_recorded_order(
    sent: list[tuple[int, list[int]]], skew: int
) -> None:
    c = ClientClock()
    n, t, placed = 0, 1_700_000_000_000, []
    for latency, gaps in sent:
        offset = c.observe(skew + abs(latency))
        for gap in gaps:
            n, t = n + 1, t + gap
            placed.append(c.order(seq=n, ts=t + offset))
    assert placed == sorted(placed)


@LOADED
@given(st.permutations(list(range(1, 9))), st.lists(st.integers(0, 3_000), min_size=8, max_size=8))
def test_a_batch_overtaken_on_the_way_is_placed_before_what_overtook_it(
    arrival: list[int], latency: list[int]
) -> None:
    c = ClientClock()
    placed: dict[int, int] = {}
    for seq in arrival:  # one event a batch, arriving in any order
        offset = c.observe(latency[seq - 1])
        placed[seq] = c.order(seq=seq, ts=1_700_000_000_000 + 100 * seq + offset)
        top = max(placed)
        # Never after an event numbered later that is already placed.
        assert all(placed[seq] <= placed[k] for k in placed if k > seq)
        assert placed[top] == max(placed.values())
