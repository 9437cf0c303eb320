"""An outcome's scores in one visit, and how each new prediction updates them.

The record keeps the latest probability and quantile beside their maxima over the visit:
a trigger on "the visit's highest score" must not forget a peak once the visitor moves on.
It is array-like, so the live state's msgpack stays ``[p, max p, q, max q]`` as before.
"""

from __future__ import annotations

from typing import Final

import msgspec

# The wire (API and condition-language) name of each field, in record order.
FIELD_NAMES: Final = ("probability", "maxProbability", "quantile", "maxQuantile")


class Scores(msgspec.Struct, frozen=True, array_like=True):
    """Latest probability and quantile of an outcome in a visit, with their visit maxima."""

    probability: float
    visit_max: float
    quantile: float
    visit_max_quantile: float

    def to_json(self, ndigits: int | None = None) -> dict[str, float]:
        """The API's view, under the condition language's names (rounded if asked).

        >>> Scores(0.123456, 0.5, 0.2, 0.9).to_json(4)["probability"]
        0.1235
        """
        values = msgspec.structs.astuple(self)
        if ndigits is not None:
            values = tuple(round(v, ndigits) for v in values)
        return dict(zip(FIELD_NAMES, values, strict=True))


def rescored(previous: Scores | None, probability: float, quantile: float) -> Scores:
    """The scores after one more prediction in the visit: latest values, running maxima.

    >>> first = rescored(None, 0.4, 0.7)
    >>> rescored(first, 0.2, 0.3)
    Scores(probability=0.2, visit_max=0.4, quantile=0.3, visit_max_quantile=0.7)
    """
    if previous is None:
        return Scores(probability, probability, quantile, quantile)
    return Scores(
        probability,
        max(probability, previous.visit_max),
        quantile,
        max(quantile, previous.visit_max_quantile),
    )
