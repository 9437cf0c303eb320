"""Synthetic website traffic for the demo site, with the true outcome probabilities.

Each session follows the hidden chain of :mod:`opportune.sim.personas`; this module renders
its steps as the events the browser snippet would send (``opportune.core.events`` Structs, in
batches of one visitor), keeps beside every event the exact probability of each outcome after
it, and models the population around sessions: devices, campaigns, locales, visitors coming
back on later days and customers coming back on a second device. Deterministic per seed; time
is always an argument. See ``docs/simulator.md``.

>>> s = next(generate(1, start_ms=0, visitors_per_day=1))
>>> s.events[0].type, len(s.probabilities) == len(s.events)
('page_view', True)
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import numpy as np

from opportune.core.events import Batch, Event
from opportune.sim import personas as P
from opportune.sim.draws import Draws, cumulative
from opportune.sim.landing import draw_landing
from opportune.sim.personas import TrafficMix, chain
from opportune.sim.rendering import START_STEP, Recorder, Step, render, snippet_batches
from opportune.sim.site import DIURNAL, FIRST_NAMES, QUERIES, TZ_OFFSET_H, USER_AGENTS

DEFAULT_ORIGIN: Final = "http://localhost:8000"
DAY_MS: Final = 86_400_000
RETURN_AFTER_MS: Final = 4 * 3_600_000  # a returning visit starts at least this after the last


@dataclass(slots=True)
class Visitor:
    """One browser (visitor id) and what persists across its sessions."""

    id: str
    device: str
    user_agent: str
    screen: tuple[int, int]
    locale: str
    timezone: str
    clock_skew_ms: int
    email: str | None = None
    visits: int = 0
    last_end_ms: int = 0
    last_intent: int = -1


@dataclass(frozen=True, slots=True)
class SimSession:
    """One simulated visit: what the server receives, and the truth it cannot see.

    ``probabilities[j, k]`` is the exact probability that outcome ``OUTCOMES[k]`` is achieved
    at an event after event ``j`` (events numbered in send order across ``batches``);
    ``achieved_at`` maps each achieved outcome to the index of the event that achieves it.
    """

    visitor_id: str
    visit_number: int
    user_agent: str
    device: str
    channel: str
    persona: str
    locale: str
    timezone: str
    email: str | None
    second_device: bool
    start_ms: int
    batches: list[Batch]
    received_ms: list[int]
    probabilities: np.ndarray
    achieved_at: dict[str, int]
    hidden: list[int] = field(repr=False)  # chain state after each event (personas.state_parts)
    steps: tuple[Step, ...] = field(default=(), repr=False)  # what the events show of the chain

    @property
    def events(self) -> list[Event]:
        return [e for b in self.batches for e in b.events]

    def labels(self, outcome: str) -> np.ndarray:
        """Per event: is ``outcome`` achieved at a later event of this session?"""
        n = len(self.probabilities)
        at = self.achieved_at.get(outcome, -1)
        return np.arange(n) < at


class SimBatch(NamedTuple):
    """A batch ready to send: the body, the User-Agent header, and its server arrival time."""

    batch: Batch
    user_agent: str
    received_ms: int


class WebSimulator:
    """A population of visitors and the sessions they make; one seeded random stream."""

    def __init__(
        self,
        seed: int,
        *,
        mix: TrafficMix | None = None,
        site_key: str = "demo-site-key",
        origin: str = DEFAULT_ORIGIN,
    ) -> None:
        self.mix = mix or TrafficMix()
        self.site_key = site_key
        self.origin = origin.rstrip("/")
        self.draws = Draws(np.random.default_rng(seed))
        self.visitors: list[Visitor] = []
        self._emails = 0
        self._dev = cumulative(self.mix.devices)
        self._chan = cumulative(self.mix.channels)
        self._loc = cumulative(self.mix.locales)
        self._personas = {c: cumulative(self.mix.persona_mix(c)) for c in self.mix.channels}
        self._chains = {dev: chain(dev) for dev in P.DEVICES}

    # ---- population -----------------------------------------------------------------------
    def new_visitor(
        self, device: str | None = None, locale: tuple[str, str] | None = None
    ) -> Visitor:
        d = self.draws
        device = device or d.weighted(*self._dev)
        ua, w, h = d.pick(USER_AGENTS[device])
        loc, tz = locale or d.weighted(*self._loc)
        skew = 0
        if d.u() < self.mix.skewed_clock:
            skew = int((d.u() * 2 - 1) * 15 * 60_000)  # a browser clock up to 15 minutes off
        v = Visitor("v" + d.token(15), device, ua, (w, h), loc, tz, skew)
        self.visitors.append(v)
        return v

    def new_email(self) -> str:
        self._emails += 1
        return f"{self.draws.pick(FIRST_NAMES)}.{self._emails}@example.com"

    def pick_returning(self, start_ms: int) -> Visitor | None:
        """A known visitor whose last visit ended hours ago (a later part of the day or a later
        day), or None; a few tries at random, so the pick costs O(1)."""
        if not self.visitors:
            return None
        for _ in range(4):
            v = self.visitors[int(self.draws.u() * len(self.visitors))]
            if v.visits and v.last_end_ms + RETURN_AFTER_MS < start_ms:
                return v
        return None

    def session(self, start_ms: int, *, returning: bool | None = None) -> SimSession:
        """Choose who visits at ``start_ms`` (new, returning, second device) and simulate it."""
        d = self.draws
        want_back = d.u() < self.mix.returning if returning is None else returning
        v = self.pick_returning(start_ms) if want_back else None
        second = False
        if v is not None and v.email and d.u() < self.mix.second_device:
            # The same customer on another device: a new visitor id that signs in.
            other = [x for x in P.DEVICES if x != v.device]
            nv = self.new_visitor(d.pick(other), (v.locale, v.timezone))
            nv.email, nv.last_intent, v, second = v.email, v.last_intent, nv, True
        if v is None:
            v = self.new_visitor()
        channel = d.weighted(*self._chan)
        if second or (v.visits and d.u() < 0.5):
            channel = "direct"
        intent = P.INTENTS.index(d.weighted(*self._personas[channel]))
        if v.visits and v.last_intent in (P.APPLICANT, P.QUOTE_SEEKER, P.QUOTED) and d.u() < 0.5:
            intent = P.APPLICANT  # came back to finish the application
        elif v.visits and v.last_intent not in (-1, P.DONE, P.BROWSER) and d.u() < 0.35:
            intent = v.last_intent if v.last_intent != P.QUOTED else P.QUOTE_SEEKER
        return self._simulate(v, intent, channel, start_ms, second)

    # ---- one session ----------------------------------------------------------------------
    def _simulate(
        self, v: Visitor, intent: int, channel: str, start_ms: int, second: bool
    ) -> SimSession:
        d = self.draws
        ch = self._chains[v.device]
        acts, cums, rows = ch.actions, ch.cumulative, ch.value_rows
        v.visits += 1
        f0 = 1 if d.u() < self.mix.frustrated_start else 0
        rec = Recorder(d, self.origin, v, start_ms, v.visits, self.new_email)
        if second:
            s = self._second_device_start(rec, intent, f0, rows)
        else:
            s = self._land(rec, channel, intent, f0, rows)
        while True:
            a = acts[s][bisect_right(cums[s], d.u() * cums[s][-1])]
            start = len(rec.events)
            if a.kind == P.EXIT:
                rec.step(P.EXIT, P.state_parts(s)[1], start)
                if P.APPLY1 <= P.state_parts(s)[1] <= P.APPLY3 and d.u() < 0.85:
                    rec.form_abandoned((0.0, 0.0, 0.0, 0.0), -1, d.dwell(20_000))
                break
            render(rec, s, a, rows[a.next])
            rec.step(a.kind, P.state_parts(a.next)[1], start)
            s = a.next
        return self._finish(rec, v, intent, channel, second)

    @staticmethod
    def _second_device_start(
        rec: Recorder, intent: int, f0: int, rows: Sequence[tuple[float, ...]]
    ) -> int:
        """The customer signs in at once on the new device: login, identify, account."""
        s = P.state_index(intent, P.ACCOUNT, f0)
        rec.page(P.LOGIN, rows[s], s, intent, gap_ms=0)
        rec.sign_in(rows[s], s, intent, 9000)
        rec.step(START_STEP, P.ACCOUNT, 0)
        return s

    def _land(
        self, rec: Recorder, channel: str, intent: int, f0: int, rows: Sequence[tuple[float, ...]]
    ) -> int:
        """The landing page view, with the campaign and referrer of the channel."""
        d = self.draws
        loc, utm, ref = draw_landing(d, channel, intent)
        s = P.state_index(intent, loc, f0)
        query = d.pick(QUERIES[intent]) if loc == P.SEARCH else ""
        rec.page(loc, rows[s], s, intent, gap_ms=0, query=query, referrer=ref)
        if utm:  # campaign parameters ride on the landing page's URL
            rec.url += ("&" if "?" in rec.url else "?") + utm
            rec.events[0][1]["url"] = rec.url
        rec.step(START_STEP, loc, 0)
        return s

    def _finish(
        self, rec: Recorder, v: Visitor, intent: int, channel: str, second: bool
    ) -> SimSession:
        events = [
            Event(id=f"{rec.prefix}{i}", ts=t + v.clock_skew_ms, **fields)
            for i, (t, fields) in enumerate(rec.events)
        ]
        server_ts = [t for t, _ in rec.events]
        batches, received = snippet_batches(self.site_key, v, events, server_ts, self.draws)
        # The state the visitor left from (the events after leaving carry no state).
        last = next((x for x in reversed(rec.states) if x >= 0), -1)
        v.last_end_ms = rec.t
        v.last_intent = P.state_parts(last)[0] if last >= 0 else intent
        return SimSession(
            visitor_id=v.id,
            visit_number=v.visits,
            user_agent=v.user_agent,
            device=v.device,
            channel=channel,
            persona=P.INTENTS[intent],
            locale=v.locale,
            timezone=v.timezone,
            email=v.email,
            second_device=second,
            start_ms=rec.events[0][0],
            batches=batches,
            received_ms=received,
            probabilities=np.array(rec.rows, dtype=np.float64),
            achieved_at=rec.achieved,
            hidden=rec.states,
            steps=tuple(rec.steps),
        )


def generate(
    seed: int,
    *,
    start_ms: int,
    days: int = 1,
    visitors_per_day: int = 1000,
    mix: TrafficMix | None = None,
    site_key: str = "demo-site-key",
    origin: str = DEFAULT_ORIGIN,
    diurnal: bool = True,
    simulator: WebSimulator | None = None,
) -> Iterator[SimSession]:
    """``visitors_per_day`` sessions a day for ``days`` days from ``start_ms``, by start time.

    Sessions of one day are yielded in start order and days follow each other, so the
    per-visitor order the server needs always holds. Pass ``simulator`` to continue a
    population (the same visitors coming back), e.g. a live run after a backfill; ``seed``,
    ``mix``, ``site_key`` and ``origin`` are then the simulator's own.
    """
    sim = simulator or WebSimulator(seed, mix=mix, site_key=site_key, origin=origin)
    d = sim.draws
    top = max(DIURNAL)
    for day in range(days):
        day0 = start_ms + day * DAY_MS
        starts: list[int] = []
        while len(starts) < visitors_per_day:
            t = day0 + int(d.u() * DAY_MS)
            hour = int((t // 3_600_000 + 24 + TZ_OFFSET_H["Europe/Dublin"]) % 24)
            if not diurnal or d.u() * top < DIURNAL[hour]:
                starts.append(t)
        starts.sort()
        for t in starts:
            yield sim.session(t)


def to_batches(sessions: Iterable[SimSession]) -> Iterator[SimBatch]:
    """All batches of ``sessions`` (given in start order) in server arrival order, lazily."""
    heap: list[tuple[int, int, int, SimSession]] = []
    for seq, s in enumerate(sessions):
        while heap and heap[0][0] <= s.start_ms:
            yield _pop(heap)
        heapq.heappush(heap, (s.received_ms[0], seq, 0, s))
    while heap:
        yield _pop(heap)


def _pop(heap: list[tuple[int, int, int, SimSession]]) -> SimBatch:
    received, seq, i, s = heapq.heappop(heap)
    if i + 1 < len(s.batches):
        heapq.heappush(heap, (s.received_ms[i + 1], seq, i + 1, s))
    return SimBatch(s.batches[i], s.user_agent, received)
