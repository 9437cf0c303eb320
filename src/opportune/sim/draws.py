"""The simulator's seeded random stream: uniforms and normals drawn in blocks.

Every draw of a web simulation comes from one :class:`Draws`, in a fixed order, so a seed
always yields the same traffic.

>>> import numpy as np
>>> d = Draws(np.random.default_rng(1))
>>> 0.0 <= d.u() < 1.0, len(d.token(6))
(True, 6)
>>> keys, cum = cumulative({"a": 1.0, "b": 3.0})
>>> keys, cum
(['a', 'b'], [1.0, 4.0])
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any, Final

import numpy as np

MAX_DWELL_MS: Final = 8 * 60_000  # under the 20-minute session timeout, always
_ALPHABET: Final = tuple("abcdefghijklmnopqrstuvwxyz0123456789")
_BLOCK: Final = 8192


class Draws:
    """Uniforms and normals from a seeded numpy Generator, drawn in blocks (fast per draw)."""

    __slots__ = ("_n", "_nb", "_rng", "_u", "_ub")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._u: list[float] = []
        self._n: list[float] = []
        self._ub = 0
        self._nb = 0

    def u(self) -> float:
        if self._ub == len(self._u):
            self._u = self._rng.random(_BLOCK).tolist()
            self._ub = 0
        self._ub += 1
        return self._u[self._ub - 1]

    def normal(self) -> float:
        if self._nb == len(self._n):
            self._n = self._rng.standard_normal(_BLOCK).tolist()
            self._nb = 0
        self._nb += 1
        return self._n[self._nb - 1]

    def pick(self, seq: tuple[Any, ...] | list[Any]) -> Any:
        return seq[int(self.u() * len(seq))]

    def weighted(self, keys: list[Any], cum: list[float]) -> Any:
        return keys[min(bisect_right(cum, self.u() * cum[-1]), len(keys) - 1)]

    def dwell(self, median_ms: float, sigma: float = 0.8, low: int = 800) -> int:
        """A lognormal time on a page, clipped to ``[low, MAX_DWELL_MS]``."""
        return int(min(MAX_DWELL_MS, max(low, median_ms * math.exp(sigma * self.normal()))))

    def token(self, n: int = 12) -> str:
        return "".join(self.pick(_ALPHABET) for _ in range(n))


def cumulative(weights: dict[Any, float]) -> tuple[list[Any], list[float]]:
    """The keys of ``weights`` and their running sums, for :meth:`Draws.weighted`."""
    keys = list(weights)
    return keys, np.cumsum([weights[k] for k in keys]).tolist()
