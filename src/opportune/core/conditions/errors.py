"""The error a condition that does not validate raises, and how it names the field.

>>> str(ConditionError(["all", 2, "regex"], "not a valid regular expression"))
'all[2].regex: not a valid regular expression'
"""

from __future__ import annotations

from collections.abc import Sequence


class ConditionError(ValueError):
    """A condition that does not validate: ``path`` locates the field, e.g. ``all[2].regex``."""

    def __init__(self, path: Sequence[str | int], message: str) -> None:
        self.path = tuple(path)
        self.message = message
        super().__init__(f"{format_path(self.path)}: {message}" if self.path else message)


def format_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
