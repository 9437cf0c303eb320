"""The journey's decisions outside the fold: whether it is current, and what a visit that
ends leaves to the next."""

from __future__ import annotations

from typing import Any

import pytest

from opportune.core.journey import Journey, past_outcomes_after


@pytest.mark.parametrize(
    ("built_under", "in_force", "current"),
    [("r1", "r1", True), ("r1", "r2", False), ("", "r1", False), ("", "", True)],
)
def test_a_journey_is_current_only_under_the_rules_it_was_built_for(
    built_under: str, in_force: str, current: bool
) -> None:
    assert Journey("s", 0, rules=built_under).is_current(in_force) is current


@pytest.mark.parametrize(
    ("past", "achieved", "expected"),
    [
        ({}, {}, {}),
        ({}, {"loan": [5, None]}, {"loan": 1}),
        ({"loan": 2}, {"loan": [5, 100.0]}, {"loan": 3}),
        ({"loan": 2}, {"call": [5, None]}, {"loan": 2, "call": 1}),
        ({"loan": 1, "call": 1}, {"loan": [5, None], "call": [6, None]}, {"loan": 2, "call": 2}),
    ],
)
def test_an_ended_visit_adds_its_outcomes_to_the_history(
    past: dict[str, int], achieved: dict[str, list[Any]], expected: dict[str, int]
) -> None:
    before = dict(past)
    assert past_outcomes_after(past, Journey("s", 0, outcomes=achieved)) == expected
    assert past == before  # the history given is not changed in place
