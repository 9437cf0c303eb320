"""Synthetic website traffic for the demo site, with the true outcome probabilities.

Each session follows the hidden chain of :mod:`opportune.sim.personas`; this module renders
its steps as the events the browser snippet would send (``opportune.core.events`` Structs, in
batches of one visitor), keeps beside every event the exact probability of each outcome after
it, and models the population around sessions: devices, campaigns, locales, visitors coming
back on later days and customers coming back on a second device. Deterministic per seed; time
is always an argument. See ``docs/simulator.md``.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple
from urllib.parse import quote_plus

import numpy as np

from opportune.core.events import Batch, Context, Event, Identity
from opportune.sim import personas as P
from opportune.sim.personas import OUTCOMES, TrafficMix, chain
from opportune.sim.site import (
    ALL_INTEREST,
    ALL_QUERIES,
    ARTICLES,
    DIURNAL,
    FIRST_NAMES,
    FORM_FIELDS,
    HELP_ARTICLES,
    INTEREST,
    ORGANIC,
    PAGES,
    QUERIES,
    RAGE_TARGETS,
    REFERRALS,
    SOCIAL,
    TZ_OFFSET_H,
    USER_AGENTS,
    VIEWPORTS,
)

DEFAULT_ORIGIN: Final = "http://localhost:8000"
DAY_MS: Final = 86_400_000
RETURN_AFTER_MS: Final = 4 * 3_600_000  # a returning visit starts at least this after the last
FLUSH_MS: Final = 1000  # the snippet's flushIntervalMs
BATCH_SIZE: Final = 10  # the snippet's batchSize
MAX_DWELL_MS: Final = 8 * 60_000  # under the 20-minute session timeout, always


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


class Step(NamedTuple):
    """One step of the hidden chain as the events show it, for the observer's posterior
    (:mod:`opportune.sim.posterior`): the action ``kind`` (``START`` for the landing), the
    location after it, the index of its first event, and the evidence of intent it rendered
    (a search query, a help article, an in-page click) with the index of that event."""

    kind: int
    loc: int
    start: int
    evidence_at: int
    evidence: tuple[str, str] | None


START_STEP: Final = -2  # the landing (or a second device's sign-in): no chain step before it


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


_ALPHABET: Final = tuple("abcdefghijklmnopqrstuvwxyz0123456789")


class _Draws:
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
            self._u = self._rng.random(8192).tolist()
            self._ub = 0
        self._ub += 1
        return self._u[self._ub - 1]

    def normal(self) -> float:
        if self._nb == len(self._n):
            self._n = self._rng.standard_normal(8192).tolist()
            self._nb = 0
        self._nb += 1
        return self._n[self._nb - 1]

    def pick(self, seq: tuple[Any, ...] | list[Any]) -> Any:
        return seq[int(self.u() * len(seq))]

    def weighted(self, keys: list[Any], cum: list[float]) -> Any:
        return keys[min(bisect_right(cum, self.u() * cum[-1]), len(keys) - 1)]

    def dwell(self, median_ms: float, sigma: float = 0.8, low: int = 800) -> int:
        return int(min(MAX_DWELL_MS, max(low, median_ms * math.exp(sigma * self.normal()))))

    def token(self, n: int = 12) -> str:
        return "".join(self.pick(_ALPHABET) for _ in range(n))


def _cum(weights: dict[Any, float]) -> tuple[list[Any], list[float]]:
    keys = list(weights)
    return keys, np.cumsum([weights[k] for k in keys]).tolist()


class _Session:
    """Renders one session's chain steps as events, with the truth beside each event."""

    def __init__(self, sim: WebSimulator, v: Visitor, start_ms: int, session_no: int) -> None:
        self.sim = sim
        self.d = sim.draws
        self.v = v
        self.t = start_ms  # server clock
        self.prefix = f"{v.id}.{session_no}."
        self.events: list[tuple[int, dict[str, Any]]] = []  # (server ms, fields)
        self.rows: list[tuple[float, ...]] = []
        self.states: list[int] = []
        self.achieved: dict[str, int] = {}
        self.depth = 0
        self.seen_view = False
        self.url = ""
        self.steps: list[Step] = []
        self.evidence: tuple[str, str] | None = None  # of the step being rendered
        self.evidence_at = 0

    def step(self, kind: int, loc: int, start: int) -> None:
        """Record the step whose events begin at ``start`` (and its evidence, if any)."""
        ev, at = self.evidence, self.evidence_at
        self.steps.append(Step(kind, loc, start, at if ev else start, ev))
        self.evidence = None

    def emit(self, row: tuple[float, ...], state: int, gap_ms: int, **fields: Any) -> None:
        self.t += gap_ms
        self.events.append((self.t, fields))
        self.rows.append(row)
        self.states.append(state)

    def page(
        self,
        loc: int,
        row: tuple[float, ...],
        state: int,
        intent: int,
        *,
        gap_ms: int,
        query: str = "",
        referrer: str | None = None,
    ) -> None:
        path, title = PAGES[loc]
        url = self.sim.origin + path
        d = self.d
        if loc == P.SEARCH:
            q = d.pick(QUERIES[intent]) if d.u() < 0.8 else d.pick(ALL_QUERIES)
            self.evidence = ("landing_query", query) if query else ("query", q)
            self.evidence_at = len(self.events)
            query = query or q
            url += "?q=" + quote_plus(query)
        elif loc == P.HELP:
            art = d.pick(ARTICLES[intent]) if d.u() < 0.8 else d.pick(tuple(HELP_ARTICLES))
            self.evidence = ("article", art)
            self.evidence_at = len(self.events)
            url += "?article=" + art
            title = f"{HELP_ARTICLES[art]} · {title}"
        elif loc == P.CONFIRMATION:
            url += "?ref=OB-" + d.token(6).upper()
        fields: dict[str, Any] = {"type": "page_view", "url": url, "title": title}
        if referrer:
            fields["referrer"] = referrer
        self.emit(row, state, gap_ms, **fields)
        self.url = url
        self.depth = 0
        self.seen_view = False
        if loc == P.SEARCH:
            self.emit(row, state, 40, type="search", url=url, query=query)


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
        self.draws = _Draws(np.random.default_rng(seed))
        self.visitors: list[Visitor] = []
        self._emails = 0
        self._dev = _cum(self.mix.devices)
        self._chan = _cum(self.mix.channels)
        self._loc = _cum(self.mix.locales)
        self._personas = {c: _cum(self.mix.persona_mix(c)) for c in self.mix.channels}
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
    @staticmethod
    def start_intent_probs(mix: TrafficMix, channel: str, last: int) -> np.ndarray:
        """The distribution ``session`` draws the first intent from, given the channel and the
        intent the visitor last left with (-1: a first visit, or a first visit on this device)."""
        p = np.zeros(len(P.INTENTS))
        for name, w in mix.persona_mix(channel).items():
            p[P.INTENTS.index(name)] = w
        if last in (-1, P.DONE, P.BROWSER):
            return p
        kept = np.zeros(len(P.INTENTS))
        kept[last if last != P.QUOTED else P.QUOTE_SEEKER] = 1.0
        p = 0.35 * kept + 0.65 * p
        if last in (P.APPLICANT, P.QUOTE_SEEKER, P.QUOTED):
            p *= 0.5  # half of them come back to finish the application
            p[P.APPLICANT] += 0.5
        return p

    def _landing(self, channel: str, intent: int) -> tuple[int, str, str | None]:
        d = self.draws
        support = intent in (P.SUP_DEVICE, P.SUP_TRAVEL, P.SUP_RETURNS)
        if channel == "cpc":
            loc = P.PRODUCT if d.u() < 0.7 else P.HOME
            camp = "personal-loan-q4" if loc == P.PRODUCT else "brand"
            return (
                loc,
                (f"utm_source=google&utm_medium=cpc&utm_campaign={camp}&gclid={d.token(20)}"),
                "https://www.google.com/",
            )
        if channel == "email":
            loc = P.PRODUCT if d.u() < 0.5 else P.HOME
            return loc, "utm_source=newsletter&utm_medium=email&utm_campaign=november", None
        if channel == "social":
            src, ref = d.pick(SOCIAL)
            loc = P.PRODUCT if d.u() < 0.4 else P.HOME
            return loc, f"utm_source={src}&utm_medium=social&utm_campaign=autumn", ref
        u = d.u()
        if channel == "organic":
            if support:
                loc = P.HELP if u < 0.5 else P.SEARCH if u < 0.7 else P.HOME
            elif intent in (P.APPLICANT, P.QUOTE_SEEKER):
                loc = P.PRODUCT if u < 0.7 else P.SEARCH if u < 0.8 else P.HOME
            else:
                loc = P.PRODUCT if u < 0.3 else P.SEARCH if u < 0.4 else P.HOME
            return loc, "", d.pick(ORGANIC)
        if channel == "referral":
            return (P.PRODUCT if u < 0.6 else P.HOME), "", d.pick(REFERRALS)
        # Direct: bookmarks and typed addresses say something about why people come.
        if intent == P.APPLICANT:
            loc = P.APPLY1 if u < 0.3 else P.PRODUCT if u < 0.6 else P.HOME
        elif intent in (P.BUYER, P.SUP_DEVICE, P.SUP_TRAVEL, P.SUP_RETURNS):
            loc = P.LOGIN if u < 0.4 else P.HELP if u < 0.5 and support else P.HOME
        else:
            loc = P.LOGIN if u < 0.1 else P.HOME
        return loc, "", None

    @staticmethod
    def landing_probs(channel: str, intent: int) -> dict[int, float]:
        """The distribution ``_landing`` draws the landing location from (for the observer's
        posterior; a test holds the two together)."""
        support = intent in (P.SUP_DEVICE, P.SUP_TRAVEL, P.SUP_RETURNS)
        if channel == "cpc":
            return {P.PRODUCT: 0.7, P.HOME: 0.3}
        if channel == "email":
            return {P.PRODUCT: 0.5, P.HOME: 0.5}
        if channel == "social":
            return {P.PRODUCT: 0.4, P.HOME: 0.6}
        if channel == "organic":
            if support:
                return {P.HELP: 0.5, P.SEARCH: 0.2, P.HOME: 0.3}
            if intent in (P.APPLICANT, P.QUOTE_SEEKER):
                return {P.PRODUCT: 0.7, P.SEARCH: 0.1, P.HOME: 0.2}
            return {P.PRODUCT: 0.3, P.SEARCH: 0.1, P.HOME: 0.6}
        if channel == "referral":
            return {P.PRODUCT: 0.6, P.HOME: 0.4}
        if intent == P.APPLICANT:
            return {P.APPLY1: 0.3, P.PRODUCT: 0.3, P.HOME: 0.4}
        if support:
            return {P.LOGIN: 0.4, P.HELP: 0.1, P.HOME: 0.5}
        if intent == P.BUYER:
            return {P.LOGIN: 0.4, P.HOME: 0.6}
        return {P.LOGIN: 0.1, P.HOME: 0.9}

    def _simulate(
        self, v: Visitor, intent: int, channel: str, start_ms: int, second: bool
    ) -> SimSession:
        d = self.draws
        ch = self._chains[v.device]
        acts, cums, rows = ch.actions, ch.cumulative, ch.value_rows
        v.visits += 1
        persona = P.INTENTS[intent]
        f0 = 1 if d.u() < self.mix.frustrated_start else 0
        ss = _Session(self, v, start_ms, v.visits)
        if second:
            # The customer signs in at once on the new device: login, identify, account.
            s = P.state_index(intent, P.ACCOUNT, f0)
            row = rows[s]
            ss.page(P.LOGIN, row, s, intent, gap_ms=0)
            ss.emit(
                row,
                s,
                d.dwell(9000),
                type="form_submitted",
                url=ss.url,
                name="login",
                attributes={"fields": 3},
            )
            ss.emit(row, s, 5, type="identify", identity=Identity(email=v.email))
            ss.page(P.ACCOUNT, row, s, intent, gap_ms=d.dwell(700, 0.3, 200))
            ss.step(START_STEP, P.ACCOUNT, 0)
        else:
            loc, utm, ref = self._landing(channel, intent)
            s = P.state_index(intent, loc, f0)
            query = d.pick(QUERIES[intent]) if loc == P.SEARCH else ""
            ss.page(loc, rows[s], s, intent, gap_ms=0, query=query, referrer=ref)
            if utm:  # campaign parameters ride on the landing page's URL
                ss.url += ("&" if "?" in ss.url else "?") + utm
                ss.events[0][1]["url"] = ss.url
            ss.step(START_STEP, loc, 0)
        while True:
            a = acts[s][bisect_right(cums[s], d.u() * cums[s][-1])]
            start = len(ss.events)
            if a.kind == P.EXIT:
                ss.step(P.EXIT, P.state_parts(s)[1], start)
                if P.APPLY1 <= P.state_parts(s)[1] <= P.APPLY3 and d.u() < 0.85:
                    ss.emit(
                        (0.0, 0.0, 0.0, 0.0),
                        -1,
                        d.dwell(20_000),
                        type="form_abandoned",
                        url=ss.url,
                        name="loan",
                        attributes={"inputs": 1 + int(d.u() * 8)},
                    )
                break
            self._render(ss, s, a, rows[a.next])
            ss.step(a.kind, P.state_parts(a.next)[1], start)
            s = a.next
        return self._finish(ss, v, intent, channel, persona, second)

    def _render(self, ss: _Session, s: int, a: P.Action, row: tuple[float, ...]) -> None:
        d = self.draws
        loc, f = P.state_parts(s)[1:]
        ni, nloc, _ = P.state_parts(a.next)
        k = a.kind
        url = ss.url
        if k == P.GO:
            gap = d.dwell(22_000 * (1 + 0.15 * f))
            if P.APPLY1 <= loc <= P.APPLY3 and d.u() < 0.8:
                ss.emit(
                    row,
                    a.next,
                    gap,
                    type="form_abandoned",
                    url=url,
                    name="loan",
                    attributes={"inputs": 1 + int(d.u() * 8)},
                )
                gap = 0
            if d.u() < 0.6 and nloc != P.SEARCH:
                name = PAGES[nloc][1].split(" · ")[0]
                href = self.origin + PAGES[nloc][0]
                ss.emit(
                    row, a.next, gap, type="click", url=url, name=name, attributes={"href": href}
                )
                gap = d.dwell(600, 0.4, 100)
            ss.page(nloc, row, a.next, ni, gap_ms=gap)
        elif k == P.STAY:
            gap = d.dwell(7000)
            if d.u() < 0.45 and not P.APPLY1 <= loc <= P.APPLY3:
                ni = P.state_parts(a.next)[0]
                name = d.pick(INTEREST[ni]) if d.u() < 0.75 else d.pick(ALL_INTEREST)
                ss.evidence, ss.evidence_at = ("interest", name), len(ss.events)
                ss.emit(row, a.next, gap, type="click", url=url, name=name)
            elif loc in VIEWPORTS and not ss.seen_view and d.u() < 0.5:
                ss.seen_view = True
                ss.emit(row, a.next, gap, type="viewport", url=url, name=VIEWPORTS[loc])
            elif ss.depth < 100:
                ss.depth += 25
                ss.emit(
                    row,
                    a.next,
                    gap,
                    type="scroll",
                    url=url,
                    name=f"{ss.depth}%",
                    attributes={"depth": ss.depth},
                )
            else:
                ss.emit(
                    row,
                    a.next,
                    gap,
                    type="click",
                    url=url,
                    name="See rates",
                    attributes={"href": url.split("#")[0] + "#rates"},
                )
        elif k == P.IDLE:
            ss.emit(
                row,
                a.next,
                30_000 + d.dwell(3000, 0.5, 100),
                type="idle",
                url=url,
                attributes={"seconds": 30},
            )
        elif k == P.RAGE:
            name = RAGE_TARGETS[loc]
            gap = d.dwell(4000)
            for _ in range(3 + int(d.u() * 4)):
                ss.emit(row, a.next, gap, type="click", url=url, name=name)
                gap = 120 + int(d.u() * 180)
        elif k in (P.NEXT, P.ERROR):
            step = loc - P.APPLY1
            ss.emit(
                row,
                a.next,
                d.dwell(20_000 * (1 + step * 0.5)),
                type="click",
                url=url,
                name="Submit application" if step == 2 else "Continue",
            )
            if k == P.ERROR:
                fields = FORM_FIELDS[step]
                for i in range(1 + int(d.u() * min(3, len(fields)))):
                    fld, msg = fields[(i + int(d.u() * len(fields))) % len(fields)]
                    attrs: dict[str, Any] = {"field": fld}
                    if msg:
                        attrs["message"] = msg
                    else:
                        attrs["reason"] = "valueMissing"
                    ss.emit(
                        row, a.next, 30, type="form_error", url=url, name="loan", attributes=attrs
                    )
        elif k == P.SUBMIT:
            self._outcome(ss, a, row, P.LOAN, d.dwell(25_000), "Submit application")
            v = ss.v
            v.email = v.email or self.new_email()
            ss.emit(
                row,
                a.next,
                5,
                type="identify",
                identity=Identity(email=v.email),
                traits={"firstName": v.email.split(".")[0].title()},
            )
            ss.emit(
                row,
                a.next,
                5,
                type="form_submitted",
                url=url,
                name="loan",
                attributes={"fields": 9},
            )
            ss.page(P.CONFIRMATION, row, a.next, ni, gap_ms=d.dwell(900, 0.3, 200))
        elif k == P.QUOTE_ACT:
            self._outcome(ss, a, row, P.QUOTE, d.dwell(30_000), "Get my quote")
        elif k == P.BOOK:
            self._outcome(ss, a, row, P.DEMO, d.dwell(30_000), "Book a call with an adviser")
        elif k == P.PURCHASE_ACT:
            self._outcome(ss, a, row, P.PURCHASE, d.dwell(25_000), "Order the travel card")
        elif k == P.SIGNIN:
            v = ss.v
            v.email = v.email or self.new_email()
            ss.emit(
                row,
                a.next,
                d.dwell(12_000),
                type="form_submitted",
                url=url,
                name="login",
                attributes={"fields": 3},
            )
            ss.emit(row, a.next, 5, type="identify", identity=Identity(email=v.email))
            ss.page(P.ACCOUNT, row, a.next, ni, gap_ms=d.dwell(700, 0.3, 200))
        elif k == P.LOGIN_ERROR:
            fld, reason = ("password", "tooShort") if d.u() < 0.6 else ("email", "typeMismatch")
            ss.emit(
                row,
                a.next,
                d.dwell(10_000),
                type="form_error",
                url=url,
                name="login",
                attributes={"field": fld, "reason": reason},
            )
        else:  # pragma: no cover - the chain has no other kinds
            raise AssertionError(k)

    def _outcome(
        self, ss: _Session, a: P.Action, row: tuple[float, ...], k: int, gap: int, button: str
    ) -> None:
        """The click that makes an outcome (certain to follow: probability 1), then the event."""
        d = self.draws
        sure = tuple(1.0 if i == k else p for i, p in enumerate(row))
        ss.emit(sure, a.next, gap, type="click", url=ss.url, name=button)
        if k == P.LOAN:
            amount = int(round(min(50_000, 1000 + 9000 * math.exp(0.7 * d.normal())), -2))
            attrs: dict[str, Any] = {
                "amount": amount,
                "termMonths": d.pick((24, 36, 48, 60, 84)),
                "purpose": d.pick(("car", "home", "education", "other")),
                "value": amount,
            }
        elif k == P.QUOTE:
            amount = int(round(min(50_000, 1000 + 8000 * math.exp(0.7 * d.normal())), -2))
            attrs = {"amount": amount, "termMonths": d.pick((24, 36, 48, 60)), "value": amount}
        elif k == P.DEMO:
            attrs = {"topic": d.pick(("mortgage", "business account", "investments")), "value": 250}
        else:
            product, value = d.pick((("travel_card", 35), ("premium_card", 120), ("saver", 0)))
            if product == "saver":
                value = int(round(500 * math.exp(1.2 + 0.8 * d.normal()), -1))
            attrs = {"product": product, "value": value}
        ss.achieved[OUTCOMES[k]] = len(ss.events)
        ss.emit(
            row,
            a.next,
            400 + int(d.u() * 400),
            type="custom",
            url=ss.url,
            name=OUTCOMES[k],
            attributes=attrs,
        )

    def _finish(
        self,
        ss: _Session,
        v: Visitor,
        intent: int,
        channel: str,
        persona: str,
        second: bool,
    ) -> SimSession:
        events = [
            Event(id=f"{ss.prefix}{i}", ts=t + v.clock_skew_ms, **fields)
            for i, (t, fields) in enumerate(ss.events)
        ]
        batches, received = _batch(self, v, events, [t for t, _ in ss.events])
        # The state the visitor left from (the events after leaving carry no state).
        last = next((x for x in reversed(ss.states) if x >= 0), -1)
        v.last_end_ms = ss.t
        v.last_intent = P.state_parts(last)[0] if last >= 0 else intent
        return SimSession(
            visitor_id=v.id,
            visit_number=v.visits,
            user_agent=v.user_agent,
            device=v.device,
            channel=channel,
            persona=persona,
            locale=v.locale,
            timezone=v.timezone,
            email=v.email,
            second_device=second,
            start_ms=ss.events[0][0],
            batches=batches,
            received_ms=received,
            probabilities=np.array(ss.rows, dtype=np.float64),
            achieved_at=ss.achieved,
            hidden=ss.states,
            steps=tuple(ss.steps),
        )


def _batch(
    sim: WebSimulator, v: Visitor, events: list[Event], server_ts: list[int]
) -> tuple[list[Batch], list[int]]:
    """Group events as the snippet does: flush 1 s after the first queued event, at 10
    events, or at once after identify (and at unload, which the next page view implies)."""
    ctx = Context(
        locale=v.locale, timezone=v.timezone, screen_width=v.screen[0], screen_height=v.screen[1]
    )
    batches: list[Batch] = []
    received: list[int] = []
    i, n = 0, len(events)
    draws = sim.draws
    while i < n:
        j = i + 1
        first = server_ts[i]
        while (
            j < n
            and j - i < BATCH_SIZE
            and events[j - 1].type != "identify"
            and server_ts[j] <= first + FLUSH_MS
        ):
            j += 1
        if j - i == BATCH_SIZE or events[j - 1].type == "identify":
            sent = server_ts[j - 1]
        else:
            sent = first + FLUSH_MS if j == n else min(first + FLUSH_MS, server_ts[j])
        sent = max(sent, server_ts[j - 1])
        batches.append(
            Batch(
                site_key=sim.site_key,
                visitor_id=v.id,
                sent_at=sent + v.clock_skew_ms,
                events=events[i:j],
                context=ctx,
            )
        )
        # One request at a time, as the snippet does: a batch arrives after the one before it.
        arrival = sent + 20 + int(draws.u() * 180)
        received.append(max(arrival, received[-1] + 1) if received else arrival)
        i = j
    return batches, received


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
