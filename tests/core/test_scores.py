"""An outcome's scores in a visit: the latest values and their running maxima."""

from __future__ import annotations

import msgspec
import pytest

from opportune.core.scores import Scores, rescored


@pytest.mark.parametrize(
    ("previous", "p", "q", "expected"),
    [
        (None, 0.3, 0.6, Scores(0.3, 0.3, 0.6, 0.6)),
        (Scores(0.3, 0.3, 0.6, 0.6), 0.5, 0.8, Scores(0.5, 0.5, 0.8, 0.8)),
        (Scores(0.5, 0.5, 0.8, 0.8), 0.1, 0.2, Scores(0.1, 0.5, 0.2, 0.8)),
        # The maxima are kept apart: a higher quantile can come with a lower probability
        # (a model retrained between events).
        (Scores(0.5, 0.5, 0.4, 0.4), 0.2, 0.9, Scores(0.2, 0.5, 0.9, 0.9)),
        (Scores(0.2, 0.7, 0.3, 0.9), 0.7, 0.9, Scores(0.7, 0.7, 0.9, 0.9)),
    ],
)
def test_rescored_keeps_the_latest_and_the_visit_maxima(
    previous: Scores | None, p: float, q: float, expected: Scores
) -> None:
    assert rescored(previous, p, q) == expected


def test_the_record_encodes_as_the_four_numbers_it_replaced() -> None:
    s = Scores(0.1, 0.2, 0.3, 0.4)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(s)) == [0.1, 0.2, 0.3, 0.4]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode([0.1, 0.2, 0.3, 0.4]), type=Scores) == s


@pytest.mark.parametrize(
    ("ndigits", "expected"),
    [
        (
            None,
            {"probability": 0.123456, "maxProbability": 0.5, "quantile": 0.25, "maxQuantile": 1.0},
        ),
        (2, {"probability": 0.12, "maxProbability": 0.5, "quantile": 0.25, "maxQuantile": 1.0}),
    ],
)
def test_to_json_names_the_fields_as_the_api_and_conditions_do(
    ndigits: int | None, expected: dict[str, float]
) -> None:
    assert Scores(0.123456, 0.5, 0.25, 1.0).to_json(ndigits) == expected
