"""Score conditions: an outcome's probability and quantile in this visit.

"Was on track, is now falling off it": the visit's maximum quantile was above 0.8 and the
current one is below 0.5 (``core.scores.Scores``: latest and visit-max of each).

>>> from opportune.core.conditions import parse_condition
>>> from opportune.core.journey import Journey
>>> from opportune.core.scores import Scores
>>> c = parse_condition({"score": "apply", "maxQuantileAbove": 0.8, "quantileBelow": 0.5})
>>> j = Journey(session_id="s", started_at=0, scores={"apply": Scores(0.1, 0.3, 0.4, 0.9)})
>>> c.holds(j, 0, {})
True
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from msgspec.structs import astuple

from opportune.core.conditions.nodes import Context, Members, Node
from opportune.core.conditions.predicates import Predicate
from opportune.core.journey import Journey, JourneyEvent
from opportune.core.scores import FIELD_NAMES as SCORE_NAMES
from opportune.core.scores import Scores

SCORE_FIELDS: Final = {name: i for i, name in enumerate(SCORE_NAMES)}
_COMPARE: Final[dict[str, Callable[[float, float], bool]]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


@dataclass(frozen=True, slots=True, eq=False)
class Score(Node):
    """An outcome's score in this visit: probability, the visit's maximum probability, the
    quantile among recent visits, the maximum quantile — each tested by a predicate. A visit
    not scored (yet) matches none."""

    outcome: str
    tests: tuple[tuple[int, Predicate], ...]
    types: frozenset[str] | None = None
    # The tests as (field, comparison, bound): scores are floats, compared without the
    # predicates' coercion of any value (the hot path of score-triggered action maps).
    _floats: tuple[tuple[int, Callable[[float, float], bool], float, Predicate], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        floats = tuple((i, _COMPARE[t.op], float(t.operand), t) for i, t in self.tests)
        object.__setattr__(self, "_floats", floats)

    def _check(self, scores: Scores | None) -> bool:
        if scores is None:
            return False
        values = astuple(scores)  # in SCORE_FIELDS order
        for i, cmp, bound, test in self._floats:
            v = values[i]
            if type(v) is float:
                if not (cmp(v, bound) and math.isfinite(v)):
                    return False
            elif not test._test(v):  # not a float: the predicate decides
                return False
        return True

    def holds(self, j: Journey, now: int, members: Members) -> bool:
        return self._check(j.scores.get(self.outcome))

    def holds_over(
        self, history: Sequence[JourneyEvent], ctx: Context, now: int, members: Members
    ) -> bool:
        return self._check(ctx.scores.get(self.outcome))
