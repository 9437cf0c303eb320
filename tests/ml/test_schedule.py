"""The one retraining rule the outcome and routing models share."""

from __future__ import annotations

import pytest

from opportune.ml.schedule import due as due_names
from opportune.ml.schedule import retrain_due

NOW = 1_760_000_000_000


@pytest.mark.parametrize(
    ("last", "interval_s", "now", "due"),
    [
        (None, 86_400, NOW, True),
        (NOW, 86_400, NOW, False),
        (NOW - 86_400_000 + 1, 86_400, NOW, False),
        (NOW - 86_400_000, 86_400, NOW, True),
        (NOW - 3_600_000, 3_600, NOW, True),
        (NOW + 60_000, 86_400, NOW, False),  # a clock that went back: not due
    ],
)
def test_retraining_is_due_once_the_interval_has_passed(
    last: int | None, interval_s: float, now: int, due: bool
) -> None:
    assert retrain_due(last, interval_s, now) is due


def test_a_recent_attempt_counts_as_a_training() -> None:
    last = {"a": NOW - 2 * 86_400_000, "b": NOW - 2 * 86_400_000}.get
    attempted = {"b": NOW - 60_000}
    assert due_names(["a", "b", "c"], last, attempted, interval_s=86_400, now_ms=NOW) == ["a", "c"]
