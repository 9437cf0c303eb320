"""Durations in conditions and settings: ``"90s"``, ``"5m"``, ``"2h"``, ``"1d"`` -> ms."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Final

from opportune.core.conditions.errors import ConditionError

_UNITS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any, path: Sequence[str | int]) -> int:
    """``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"500ms"``, or a number of seconds -> ms.

    >>> parse_duration("5m", []), parse_duration(30, []), parse_duration("250ms", [])
    (300000, 30000, 250)
    """
    if isinstance(value, bool):
        raise ConditionError(path, "a duration like '30s', '5m', '2h' or '1d' is expected")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ConditionError(path, "a duration must be a finite number of seconds")
        ms = int(value * 1000)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        ms = int(float(m.group(1)) * _UNITS[m.group(2) or "s"])
    else:
        raise ConditionError(path, f"{value!r} is not a duration like '30s', '5m', '2h' or '1d'")
    if ms < 0:
        raise ConditionError(path, "a duration cannot be negative")
    return ms
