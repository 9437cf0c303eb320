"""A visitor's browser clock as the server sees it: its skew, estimated per visitor and
smoothed, and the order the snippet recorded the visitor's events in.

Each batch says when it was sent (``sentAt``, the browser's clock); ``serverNow − sentAt``
is the browser's skew plus the batch's time on the network. Taken per batch, that offset
moves by each batch's latency, so two batches sent close together could swap their events
(a slow first batch pushed later than a fast second one). Here the skew is the visitor's:

- the smallest offset seen is the best estimate (the least time on the network), so a
  smaller one is taken at once;
- a larger one moves the estimate up by at most ``STEP_MS`` per batch (a slow batch is
  mostly latency; a browser clock that really drifted is followed, slowly);
- an offset more than ``RESET_MS`` away means the browser's clock was set: start again.

And the snippet numbers the events it records (``seq``, kept across page loads): an event
with a higher number than the last one placed is never put before it, and one with a lower
number (a batch overtaken on the way, e.g. a beacon sent while a fetch was in flight) never
after it.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Final

STEP_MS: Final = 1_000
RESET_MS: Final = 5 * 60_000
KEEP: Final = 32
_LAST: Final = 2**63


@dataclass(slots=True)
class ClientClock:
    """One visitor's skew estimate and its latest placed events (number, server time).

    >>> c = ClientClock()
    >>> c.observe(900), c.observe(300), c.observe(5_000)  # first; smaller; bounded step
    (900, 300, 1300)
    >>> c.order(seq=7, ts=10_000), c.order(seq=8, ts=9_000), c.order(seq=6, ts=10_500)
    (10000, 10000, 9999)
    """

    skew_ms: int | None = None
    # (seq, server time) of the last ``KEEP`` events placed, by seq; their times never
    # decrease with their numbers. Tuples of ints: the collector stops tracking them.
    placed: list[tuple[int, int]] = field(default_factory=list)

    def observe(self, offset_ms: int) -> int:
        """Take a batch's ``serverNow − sentAt``; the visitor's skew now."""
        skew = self.skew_ms
        if skew is None or abs(offset_ms - skew) > RESET_MS or offset_ms < skew:
            skew = offset_ms
        elif offset_ms > skew:
            skew += min(offset_ms - skew, STEP_MS)
        self.skew_ms = skew
        return skew

    def order(self, *, seq: int | None, ts: int) -> int:
        """The server time of an event numbered ``seq`` at (corrected) ``ts``: moved, if
        need be, between the events numbered just before and just after it, so that it
        keeps its recorded place among the visitor's events."""
        if seq is None:
            return ts
        placed = self.placed
        i = bisect_right(placed, (seq, _LAST))  # placed[:i] numbered <= seq
        if i < len(placed):
            # A later-numbered event is placed already (this batch was overtaken): before
            # it, not at its time (ties go to arrival order).
            ts = min(ts, placed[i][1] - 1)
        if i > 0:
            ts = max(ts, placed[i - 1][1])
        placed.insert(i, (seq, ts))
        if len(placed) > KEEP:
            del placed[0]
        return ts
