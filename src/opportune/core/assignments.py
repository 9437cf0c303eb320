"""Customer-scope segment assignments: the fold of ``assigned`` rows into what is in force,
and the merge when a visitor is identified and its customer's other devices join.

One definition for the live pipeline, the store's reads and training's replay, so that a
replayed visit starts with the assignments the live one had. Pure: rows come in, a dict
of ``segment -> [since, expires at]`` goes out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

# Which rows a fold counts, by when they were written relative to the moment it folds for.
Written = Literal["any time", "by now", "before now"]


def fold_assignments(
    rows: Iterable[tuple[int, str, int]], now_ms: int, *, written: Written = "any time"
) -> dict[str, list[int]]:
    """Assignments in force at ``now_ms`` from ``assigned`` rows ((at, segment, expires at)
    in time order). ``written`` says which rows count: all of them (what the store reads
    now), those written ``"by now"`` (at or before ``now_ms``) or ``"before now"``. A
    re-assignment before expiry keeps the first ``since``.

    >>> rows = [(10, "vip", 100), (50, "vip", 200), (60, "lapsed", 70)]
    >>> fold_assignments(rows, 80)
    {'vip': [10, 200]}
    >>> fold_assignments(rows, 50, written="before now")
    {'vip': [10, 100]}
    >>> fold_assignments(rows, 50, written="by now")
    {'vip': [10, 200]}
    """
    out: dict[str, list[int]] = {}
    for at, seg, expires in rows:
        if written != "any time" and (at > now_ms or (at == now_ms and written == "before now")):
            break
        prior = out.get(seg)
        since = prior[0] if prior is not None and prior[1] > at else at
        out[seg] = [since, max(expires, prior[1] if prior else 0)]
    return {k: v for k, v in out.items() if v[1] > now_ms}


def merge_assignments(mine: dict[str, list[int]], more: Mapping[str, list[int]]) -> None:
    """The engine's merge when a visitor is newly identified: its customer's assignments
    from other devices join its own (in place); the later expiry wins.

    >>> mine = {"vip": [10, 100]}
    >>> merge_assignments(mine, {"vip": [5, 300], "new": [20, 90]})
    >>> mine
    {'vip': [5, 300], 'new': [20, 90]}
    """
    for name, (since, expires) in more.items():
        have = mine.get(name)
        if have is None or have[1] < expires:
            mine[name] = [min(since, have[0]) if have else since, expires]
