"""The latent process behind simulated web traffic: personas, their hidden state, and the truth.

A session is a Markov chain over hidden states ``(intent, location, frustration)``. Every step
of the chain is one visible action (a page view, a form error, an idle period, ...) that the
simulator renders as one or a few events. Outcomes are actions too (submitting the loan form,
requesting a quote, booking an adviser, confirming a purchase), and each can happen at most
once per session by construction (after it the intent changes to one that cannot do it again).

So the probability that outcome *k* still happens from hidden state *s* is the expected number
of future *k*-actions, which solves the linear system ``V = r + Q V`` (``Q``: transitions
between live states, ``r``: the one-step probability of a *k*-action) — exact, computed once
per device class with one dense solve of a few hundred unknowns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Final

import numpy as np

OUTCOMES: Final = ("loan_submitted", "quote_requested", "demo_booked", "purchase_confirmed")
LOAN, QUOTE, DEMO, PURCHASE = range(4)

# Hidden intents. ``quoted`` is a quote seeker who already asked for a quote; ``done`` is
# anyone after an outcome that ends their goal (no outcome can follow).
INTENTS: Final = (
    "browser",
    "buyer",
    "loan_applicant",
    "quote_seeker",
    "quoted",
    "demo_booker",
    "support_device",
    "support_travel",
    "support_returns",
    "done",
)
(
    BROWSER,
    BUYER,
    APPLICANT,
    QUOTE_SEEKER,
    QUOTED,
    DEMO_BOOKER,
    SUP_DEVICE,
    SUP_TRAVEL,
    SUP_RETURNS,
    DONE,
) = range(len(INTENTS))
PERSONAS: Final = INTENTS[:4] + INTENTS[5:9]  # what a session may start as

# Where the visitor is. The three apply steps share one URL (a multi-step form).
LOCATIONS: Final = (
    "home",
    "product",
    "apply1",
    "apply2",
    "apply3",
    "confirmation",
    "help",
    "search",
    "login",
    "account",
)
HOME, PRODUCT, APPLY1, APPLY2, APPLY3, CONFIRMATION, HELP, SEARCH, LOGIN, ACCOUNT = range(10)
NAVIGABLE: Final = (HOME, PRODUCT, APPLY1, HELP, SEARCH, LOGIN)
FRUSTRATION_LEVELS: Final = 4
DEVICES: Final = ("desktop", "mobile", "tablet")

# Action kinds: what one step of the chain shows.
GO, STAY, IDLE, RAGE, NEXT, ERROR, SUBMIT, QUOTE_ACT, BOOK, PURCHASE_ACT, SIGNIN, LOGIN_ERROR = (
    range(12)
)
EXIT: Final = -1

N_STATES: Final = len(INTENTS) * len(LOCATIONS) * FRUSTRATION_LEVELS


def state_index(intent: int, loc: int, frustration: int) -> int:
    return (intent * len(LOCATIONS) + loc) * FRUSTRATION_LEVELS + frustration


def state_parts(s: int) -> tuple[int, int, int]:
    f = s % FRUSTRATION_LEVELS
    rest = s // FRUSTRATION_LEVELS
    return rest // len(LOCATIONS), rest % len(LOCATIONS), f


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How one intent moves: where it likes to go and how likely it leaves each step."""

    exit: float  # per-step leaving probability weight at frustration 0
    go: dict[int, float]  # navigation weights to each navigable location
    stay: float = 0.35  # scroll / viewport / in-page clicks (weight)
    next_step: float = 0.0  # continue in the loan form (weight)
    submit: float = 0.0  # submit the loan form from step 3
    quote: float = 0.0  # ask for a quote on the product page
    book: float = 0.0  # book an adviser from help or product
    purchase: float = 0.0  # confirm a purchase from the account page
    signin: float = 0.3  # succeed at signing in from the login page
    switch: dict[int, float] = field(default_factory=dict)  # per-step intent changes


def _support(exit: float, go: dict[int, float]) -> Behaviour:
    """A support visitor: signs in half the time, and may drift into browsing."""
    return Behaviour(exit=exit, go=go, signin=0.5, switch={BROWSER: 0.08})


BEHAVIOURS: Final[dict[int, Behaviour]] = {
    BROWSER: Behaviour(
        exit=0.26,
        go={HOME: 0.3, PRODUCT: 0.35, APPLY1: 0.04, HELP: 0.15, SEARCH: 0.2, LOGIN: 0.06},
        next_step=0.15,
        switch={QUOTE_SEEKER: 0.04, APPLICANT: 0.04, BUYER: 0.03, DEMO_BOOKER: 0.016},
    ),
    BUYER: Behaviour(
        exit=0.12,
        go={HOME: 0.2, PRODUCT: 0.15, APPLY1: 0.01, HELP: 0.06, SEARCH: 0.2, LOGIN: 0.45},
        signin=0.75,
        purchase=0.4,
        switch={BROWSER: 0.07},
    ),
    APPLICANT: Behaviour(
        exit=0.10,
        go={HOME: 0.08, PRODUCT: 0.35, APPLY1: 0.55, HELP: 0.12, SEARCH: 0.08, LOGIN: 0.04},
        stay=0.3,
        next_step=0.8,
        submit=0.8,
        signin=0.6,
    ),
    QUOTE_SEEKER: Behaviour(
        exit=0.14,
        go={HOME: 0.12, PRODUCT: 0.6, APPLY1: 0.05, HELP: 0.12, SEARCH: 0.12, LOGIN: 0.03},
        stay=0.45,
        next_step=0.3,
        quote=0.25,
        switch={APPLICANT: 0.03},
    ),
    QUOTED: Behaviour(
        exit=0.2,
        go={HOME: 0.15, PRODUCT: 0.3, APPLY1: 0.35, HELP: 0.12, SEARCH: 0.06, LOGIN: 0.04},
        next_step=0.6,
        switch={APPLICANT: 0.12},
    ),
    DEMO_BOOKER: Behaviour(
        exit=0.15,
        go={HOME: 0.2, PRODUCT: 0.3, APPLY1: 0.02, HELP: 0.3, SEARCH: 0.15, LOGIN: 0.05},
        book=0.12,
        switch={BROWSER: 0.07},
    ),
    SUP_DEVICE: _support(0.2, {HOME: 0.1, PRODUCT: 0.03, HELP: 0.5, SEARCH: 0.3, LOGIN: 0.2}),
    SUP_TRAVEL: _support(0.22, {HOME: 0.15, PRODUCT: 0.03, HELP: 0.35, SEARCH: 0.4, LOGIN: 0.2}),
    SUP_RETURNS: _support(0.22, {HOME: 0.15, PRODUCT: 0.05, HELP: 0.4, SEARCH: 0.35, LOGIN: 0.15}),
    DONE: Behaviour(
        exit=0.55,
        go={HOME: 0.4, PRODUCT: 0.1, HELP: 0.1, SEARCH: 0.1, LOGIN: 0.3},
        stay=0.3,
        signin=0.8,
    ),
}


@dataclass(frozen=True, slots=True)
class DeviceFactors:
    """What a device changes: small screens make forms harder and patience shorter."""

    form_error: float
    exit: float
    rage: float


DEVICE_FACTORS: Final = {
    "desktop": DeviceFactors(form_error=1.0, exit=1.0, rage=1.0),
    "mobile": DeviceFactors(form_error=1.7, exit=1.25, rage=1.8),
    "tablet": DeviceFactors(form_error=1.3, exit=1.1, rage=1.3),
}

FORM_ERROR_BASE: Final = (0.18, 0.22, 0.06)  # per apply step, at frustration 0, on desktop


class Action:
    """One possible step from a state: its probability, kind and the state it leads to."""

    __slots__ = ("kind", "next", "outcome", "prob")

    def __init__(self, prob: float, kind: int, next_state: int, outcome: int) -> None:
        self.prob = prob
        self.kind = kind
        self.next = next_state
        self.outcome = outcome


def _raw_actions(intent: int, loc: int, f: int, device: str) -> list[tuple[float, int, int, int]]:
    """(weight, kind, next state, outcome or -1) before intent switching; ``EXIT`` ends."""
    b = BEHAVIOURS[intent]
    d = DEVICE_FACTORS[device]
    st = state_index
    up = min(f + 1, FRUSTRATION_LEVELS - 1)
    down = max(f - 1, 0)
    drive = max(0.0, 1.0 - 0.22 * f)  # frustration erodes the will to progress
    out: list[tuple[float, int, int, int]] = []
    exit_w = b.exit * (1.0 + 0.55 * f) * d.exit
    if loc == CONFIRMATION:
        exit_w *= 1.5
    out.append((exit_w, EXIT, -1, -1))
    in_form = loc in (APPLY1, APPLY2, APPLY3)
    for target, w in b.go.items():
        if target == loc and target not in (HELP, SEARCH):
            continue  # a reload is not a step; help and search loop on other articles/queries
        if target == HELP:
            w *= 1.0 + 0.6 * f
        if target == APPLY1:
            w *= drive
        if in_form:
            w *= 0.35  # in the form, leaving it is less likely than working on it
        out.append((w, GO, st(intent, target, f), -1))
    out.append((b.stay * (0.6 if in_form else 1.0), STAY, st(intent, loc, f), -1))
    out.append((0.035 * (1.0 + 1.3 * f), IDLE, st(intent, loc, f), -1))
    out.append((0.012 * (1.0 + 2.0 * f) * d.rage, RAGE, st(intent, loc, up), -1))
    if in_form:
        step = loc - APPLY1
        err = FORM_ERROR_BASE[step] * d.form_error * (1.0 + 0.4 * f)
        out.append((err, ERROR, st(intent, loc, up), -1))
        if loc in (APPLY1, APPLY2):
            out.append((b.next_step * drive, NEXT, st(intent, loc + 1, down), -1))
        elif b.submit:
            out.append((b.submit * drive, SUBMIT, st(DONE, CONFIRMATION, down), LOAN))
    if loc == PRODUCT and b.quote:
        out.append((b.quote * drive, QUOTE_ACT, st(QUOTED, PRODUCT, down), QUOTE))
    if loc in (PRODUCT, HELP) and b.book:
        out.append((b.book * drive, BOOK, st(DONE, loc, down), DEMO))
    if loc == ACCOUNT and b.purchase:
        out.append((b.purchase * drive, PURCHASE_ACT, st(DONE, ACCOUNT, down), PURCHASE))
    if loc == LOGIN:
        out.append((b.signin, SIGNIN, st(intent, ACCOUNT, f), -1))
        out.append((0.12 * (1.0 + 0.5 * f) * d.form_error, LOGIN_ERROR, st(intent, LOGIN, up), -1))
    return out


def _switch(intent: int, next_state: int) -> list[tuple[float, int]]:
    """Intent changes that ride on a step: (probability, next state)."""
    sw = BEHAVIOURS[intent].switch
    ni, nl, nf = state_parts(next_state)
    if not sw or ni != intent:
        return [(1.0, next_state)]
    stay = 1.0 - sum(sw.values())
    return [(stay, next_state)] + [(p, state_index(j, nl, nf)) for j, p in sw.items()]


@dataclass(frozen=True, slots=True)
class Chain:
    """The hidden chain for one device class, with the exact outcome probabilities ``value``."""

    device: str
    actions: tuple[tuple[Action, ...], ...]  # per state
    cumulative: tuple[tuple[float, ...], ...]  # per state, for sampling with one uniform
    value: np.ndarray  # (N_STATES, len(OUTCOMES)): P(outcome k happens later | state)
    value_rows: tuple[tuple[float, ...], ...]  # the same as tuples, for fast rendering


@cache
def chain(device: str) -> Chain:
    """Build the chain of a device class and solve its outcome probabilities."""
    actions: list[tuple[Action, ...]] = []
    q = np.zeros((N_STATES, N_STATES))
    r = np.zeros((N_STATES, len(OUTCOMES)))
    for s in range(N_STATES):
        intent, loc, f = state_parts(s)
        raw = _raw_actions(intent, loc, f, device)
        total = sum(w for w, *_ in raw)
        acts: list[Action] = []
        for w, kind, nxt, outcome in raw:
            p = w / total
            if kind == EXIT:
                acts.append(Action(p, kind, -1, -1))
                continue
            for ps, ns in _switch(intent, nxt) if outcome < 0 else [(1.0, nxt)]:
                acts.append(Action(p * ps, kind, ns, outcome))
                q[s, ns] += p * ps
                if outcome >= 0:
                    r[s, outcome] += p * ps
        actions.append(tuple(acts))
    # Each outcome happens at most once on any path, so P(it happens) = E[times it happens],
    # which is linear: V = r + Q V. Every state leaves with positive probability, so I - Q is
    # invertible (the chain ends almost surely).
    value = np.linalg.solve(np.eye(N_STATES) - q, r)
    value = np.clip(value, 0.0, 1.0)
    cumulative = tuple(tuple(np.cumsum([a.prob for a in acts]).tolist()) for acts in actions)
    rows = tuple(tuple(row) for row in value.tolist())
    return Chain(device, tuple(actions), cumulative, value, rows)


@dataclass(frozen=True, slots=True)
class TrafficMix:
    """The shares the simulator draws visitors from; every field is a tunable default."""

    devices: dict[str, float] = field(
        default_factory=lambda: {"desktop": 0.55, "mobile": 0.38, "tablet": 0.07}
    )
    channels: dict[str, float] = field(
        default_factory=lambda: {
            "organic": 0.35,
            "cpc": 0.18,
            "email": 0.1,
            "social": 0.1,
            "referral": 0.04,
            "direct": 0.23,
        }
    )
    personas: dict[str, float] = field(
        default_factory=lambda: {
            "browser": 0.5,
            "buyer": 0.055,
            "loan_applicant": 0.05,
            "quote_seeker": 0.065,
            "demo_booker": 0.035,
            "support_device": 0.11,
            "support_travel": 0.08,
            "support_returns": 0.1,
        }
    )
    # Campaigns bring different people: paid loan ads bring applicants, email brings customers.
    channel_persona_factors: dict[str, dict[str, float]] = field(
        default_factory=lambda: {
            "cpc": {
                "loan_applicant": 2.2,
                "quote_seeker": 1.6,
                "support_device": 0.3,
                "support_travel": 0.3,
                "support_returns": 0.3,
            },
            "email": {"buyer": 2.0, "demo_booker": 1.5},
            "organic": {"support_device": 1.5, "support_travel": 1.5, "support_returns": 1.3},
            "social": {"browser": 1.4},
        }
    )
    locales: dict[tuple[str, str], float] = field(
        default_factory=lambda: {
            ("en-IE", "Europe/Dublin"): 0.3,
            ("en-GB", "Europe/London"): 0.18,
            ("es-ES", "Europe/Madrid"): 0.15,
            ("de-DE", "Europe/Berlin"): 0.12,
            ("fr-FR", "Europe/Paris"): 0.1,
            ("en-US", "America/New_York"): 0.1,
            ("pt-BR", "America/Sao_Paulo"): 0.05,
        }
    )
    returning: float = 0.3  # share of sessions by a visitor id seen on an earlier day
    second_device: float = 0.15  # of returning identified customers: back on a new device
    frustrated_start: float = 0.15  # share of sessions starting at frustration 1
    skewed_clock: float = 0.02  # share of visitors whose browser clock is minutes off

    def persona_mix(self, channel: str) -> dict[str, float]:
        """The persona shares of new visitors arriving from ``channel`` (sums to 1)."""
        factors = self.channel_persona_factors.get(channel, {})
        w = {p: s * factors.get(p, 1.0) for p, s in self.personas.items()}
        total = sum(w.values())
        return {p: v / total for p, v in w.items()}
