"""When a model is due for retraining: the one rule the outcome and the routing models'
scheduled retraining (``engine/retraining.py``) share.

A name (an outcome, a queue) is due when its newest version is older than the interval or
it has none; a run that trained nothing counts as an attempt, so a refused or failed run
is retried after the interval, not at every check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

DEFAULT_INTERVAL_S = 86_400.0
# The server's first look waits this long: a process that just started (or a test client
# that lives a few seconds) has better things to do than count its history.
FIRST_CHECK_AFTER_S = 60.0


def retrain_due(last_trained_ms: int | None, interval_s: float, now_ms: int) -> bool:
    """Whether a model last trained at ``last_trained_ms`` (None: never) is due at ``now_ms``.

    >>> retrain_due(None, 86_400, 0)
    True
    >>> retrain_due(1_000, 86_400, 1_000 + 86_399_999), retrain_due(1_000, 86_400, 86_401_000)
    (False, True)
    """
    return last_trained_ms is None or now_ms - last_trained_ms >= interval_s * 1000


def due(
    names: Iterable[str],
    last_trained_at: Callable[[str], int | None],
    attempted: Mapping[str, int],
    *,
    interval_s: float,
    now_ms: int,
) -> list[str]:
    """Those of ``names`` due at ``now_ms``, counting the last attempt as a training.

    >>> due(["a", "b", "c"], {"a": 1_000}.get, {"b": 5_000}, interval_s=10, now_ms=12_000)
    ['a', 'c']
    """
    return [
        n
        for n in names
        if retrain_due(
            max(last_trained_at(n) or 0, attempted.get(n, 0)) or None, interval_s, now_ms
        )
    ]
