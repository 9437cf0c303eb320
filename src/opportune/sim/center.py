"""The simulated contact center: its hidden truth, its agents and the calls it receives.

Customers call in a sales queue; arrivals follow the intraday shape, weekday factors and
overdispersion of a real bank's calls (``profiles/bank_arrivals_profile.json``, derived by
``bench/derive_arrivals.py`` from Weinberg, Brown & Stroud 2007), scaled to this center.
Agents are staffed hour by hour for a target occupancy: below 1 agents are in surplus
(many free per arrival), near or above 1 interactions are (queues build, customers
abandon after an exponential or lognormal patience).

The truth the model never sees: a customer has features ``x`` (observed) and an agent has a
skill ``beta`` and a latent vector ``z``; the probability of a sale is

    p = σ(α0 + a·x + β_agent + γ·⟨x, z_agent⟩ − λ·[agent lacks the customer's language])

so pure agent skill (``agent_sd``) and match effects (``match``) can be tuned apart.

The ``specialist`` kind (``TruthParams(kind="specialist")``) is a truth no customer
features × agent vector can express: each customer also has an intent (one of
``intents``, observed as a numeric feature after ``x``), and each agent is sharply good at
one or two intents and a little worse at the rest, some agents close high-value customers
(``x0`` above a threshold) far better, and some Spanish speakers are native (better with
Spanish callers):

    p = σ(α0 + a·x + β_agent + S[agent, intent] + H_agent·[x0 > h] + N_agent·[caller in es]
          − λ·[agent lacks the customer's language])
Handle times are lognormal times a per-agent speed; wrap-up codes and delayed outcome
attributions (sale values) are drawn from the truth.

>>> center = Center(AGENT_SURPLUS, seed=1)
>>> len(center.agents), center.day_start_ms(5) - center.day_start_ms(4) == 3 * DAY_MS
(36, True)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Final, Literal

import numpy as np

from opportune.core.kpis import KPI
from opportune.core.routing import (
    Agent,
    Medium,
    PredictiveSettings,
    Queue,
    Ring,
    SkillRequirement,
    Strategy,
)

PROFILE_PATH: Final = Path(__file__).parent / "profiles" / "bank_arrivals_profile.json"
START_MS: Final = 1_763_942_400_000  # 2025-11-24T00:00Z, a Monday
DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
SALE: Final = "sale"
OTHER_CODES: Final = (("no_sale", 0.6), ("callback", 0.25), ("not_interested", 0.15))
SKILL: Final = "sales"
SALES_CONVERSION: Final = KPI(
    "sales conversion", "sales_conversion", success_codes=frozenset({SALE})
)


@dataclass(frozen=True, slots=True)
class ArrivalProfile:
    """Intraday shape and day-to-day variation of arrivals (from the fixture)."""

    hours: tuple[int, ...]
    share_by_hour: tuple[float, ...]
    weekday_factor: tuple[float, ...]  # Monday .. Friday
    daily_cv: float
    hourly_cv: float
    source: str

    @classmethod
    def load(cls, path: Path = PROFILE_PATH) -> ArrivalProfile:
        raw = json.loads(path.read_text())
        wf = raw["weekday_factor"]
        return cls(
            hours=tuple(raw["hours"]),
            share_by_hour=tuple(raw["share_by_hour"]),
            weekday_factor=tuple(wf[d] for d in ("mon", "tue", "wed", "thu", "fri")),
            daily_cv=raw["daily_cv"],
            hourly_cv=raw["hourly_cv"],
            source=raw["source"],
        )


@dataclass(frozen=True, slots=True)
class TruthParams:
    kind: Literal["bilinear", "specialist"] = "bilinear"
    n_features: int = 4
    base_rate: float = 0.15  # sale probability of an average customer and agent
    customer_sd: float = 0.6  # sd of a·x on the logit scale
    agent_sd: float = 0.2  # sd of β: agent skill, the same for every customer
    match: float = 0.25  # γ: sd of the match effect γ·⟨x, z⟩
    language_penalty: float = 0.7  # logit cost of serving in a second-best language
    proficiency_signal: float = 0.6  # correlation of the visible proficiency with β
    # specialist only: intents and the sharp strengths of agents
    intents: int = 6
    strong_intents: tuple[int, int] = (1, 2)  # each agent is strong at this many intents
    strong_effect: float = 0.9  # logit, mean; sd 0.2
    weak_effect: float = -0.2  # logit, mean at the other intents; sd 0.15
    high_value_threshold: float = 1.0  # x0 above it: a high-value customer (~16%)
    closer_share: float = 0.25  # of agents: close high-value customers far better
    closer_effect: float = 0.8  # logit; the others -0.1 with them
    native_share: float = 0.5  # of Spanish speakers: native, better with Spanish callers
    native_effect: float = 0.5  # logit


@dataclass(frozen=True, slots=True)
class CenterConfig:
    agents: int = 36
    calls_per_day: float = 2500.0  # mean weekday volume (the bank's is ~32,000)
    occupancy: float = 0.6  # staffing target: agents per hour = offered load / occupancy
    handle_median_s: float = 240.0
    handle_sigma: float = 0.45
    agent_speed_sd: float = 0.15  # sd of the log of a per-agent handle-time factor
    patience: Literal["exponential", "lognormal"] = "exponential"
    patience_mean_s: float = 150.0
    patience_sigma: float = 1.0  # lognormal only
    second_language: str = "es"
    second_language_share: float = 0.15  # of customers
    bilingual_share: float = 0.3  # of agents
    language_ring_s: float = 45.0  # bullseye: drop the language requirement after this wait
    medium: Medium = "voice"
    capacity: int = 1
    sale_value_median: float = 400.0
    sale_value_sigma: float = 0.8
    outcome_delay_mean_days: float = 2.0
    truth: TruthParams = field(default_factory=TruthParams)

    @property
    def mean_handle_s(self) -> float:
        return self.handle_median_s * math.exp((self.handle_sigma**2 + self.agent_speed_sd**2) / 2)


AGENT_SURPLUS: Final = CenterConfig(occupancy=0.6)
INTERACTION_SURPLUS: Final = CenterConfig(occupancy=1.05)
SPECIALIST: Final = TruthParams(kind="specialist", agent_sd=0.1, match=0.0)


def config(kind: Literal["bilinear", "specialist"], load: float) -> CenterConfig:
    """A center of ``kind`` staffed for occupancy ``load`` (the benchmark's worlds).

    >>> config("specialist", 0.95).truth.kind, config("bilinear", 0.7).occupancy
    ('specialist', 0.7)
    """
    return CenterConfig(occupancy=load, truth=SPECIALIST if kind == "specialist" else TruthParams())


@dataclass(frozen=True, slots=True)
class SimAgent:
    id: str
    beta: float
    z: tuple[float, ...]
    speed: float  # handle-time factor
    proficiency: int  # 1..5, visible, correlated with beta
    languages: frozenset[str]
    strengths: tuple[float, ...] = ()  # specialist: logit effect per intent
    closer: float = 0.0  # specialist: logit effect with high-value customers
    native: float = 0.0  # specialist: logit effect with Spanish callers


@dataclass(frozen=True, slots=True)
class Arrival:
    """One customer's call with all its randomness drawn up front."""

    id: str
    customer_id: str
    at_ms: int
    x: tuple[float, ...]  # specialist: the intent (0, 1, …) is the last
    language: str
    patience_s: float
    handle_base_s: float
    u_outcome: float  # sale iff u_outcome < p(customer, agent)
    u_code: float
    sale_value: float
    outcome_delay_ms: int


class Center:
    """The hidden truth of a center: agents (skill, latent vector, speed) and the model."""

    def __init__(self, config: CenterConfig, seed: int, profile: ArrivalProfile | None = None):
        self.config = config
        self.profile = profile or ArrivalProfile.load()
        t = config.truth
        self._seed = seed
        rng = np.random.default_rng([seed, 1])
        d = t.n_features
        self.alpha0 = math.log(t.base_rate / (1 - t.base_rate))
        self.weights = rng.normal(0, t.customer_sd / math.sqrt(d), d)
        beta = rng.normal(0, t.agent_sd, config.agents)
        z = rng.normal(0, t.match / math.sqrt(d), (config.agents, d))
        speed = np.exp(rng.normal(0, config.agent_speed_sd, config.agents))
        rho = t.proficiency_signal
        latent = rho * beta / max(t.agent_sd, 1e-9) + math.sqrt(1 - rho**2) * rng.normal(
            0, 1, config.agents
        )
        proficiency = np.clip(np.round(3 + 1.1 * latent), 1, 5).astype(int)
        bilingual = rng.random(config.agents) < config.bilingual_share
        strengths, closer, native = self._specialties(t, bilingual)
        self.agents = [
            SimAgent(
                id=f"a{k:02d}",
                beta=float(beta[k]),
                z=tuple(float(v) for v in z[k]),
                speed=float(speed[k]),
                proficiency=int(proficiency[k]),
                languages=frozenset({"en", config.second_language} if bilingual[k] else {"en"}),
                strengths=tuple(float(v) for v in strengths[k]),
                closer=float(closer[k]),
                native=float(native[k]),
            )
            for k in range(config.agents)
        ]
        self._strengths, self._closer, self._native = strengths, closer, native
        self._beta = beta
        self._z = z
        self._speaks = np.array([[config.second_language in a.languages] for a in self.agents])
        self._languages = {a.id: a.languages for a in self.agents}

    def _specialties(
        self, t: TruthParams, bilingual: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The specialist kind's sharp strengths (zeros for the bilinear kind), drawn from
        their own stream so the bilinear agents of a seed stay what they were."""
        n = self.config.agents
        if t.kind != "specialist":
            return np.zeros((n, 0)), np.zeros(n), np.zeros(n)
        rng = np.random.default_rng([self._seed, 3])
        strengths = rng.normal(t.weak_effect, 0.15, (n, t.intents))
        lo, hi = t.strong_intents
        for k in range(n):
            good = rng.choice(t.intents, size=int(rng.integers(lo, hi + 1)), replace=False)
            strengths[k, good] = rng.normal(t.strong_effect, 0.2, len(good))
        closer = np.where(rng.random(n) < t.closer_share, t.closer_effect, -0.1)
        native = np.where(bilingual & (rng.random(n) < t.native_share), t.native_effect, 0.0)
        return strengths, closer, native

    @property
    def kind(self) -> str:
        return self.config.truth.kind

    @cached_property
    def agent_ids(self) -> list[str]:
        return [a.id for a in self.agents]

    def true_p(self, x: Sequence[float], language: str) -> np.ndarray:
        """The true sale probability of this customer with every agent (in agent order):
        what the simulator draws each outcome from, and what the oracle scores by."""
        t = self.config.truth
        xv = np.asarray(x, dtype=float)
        d = t.n_features
        eta = self.alpha0 + self.weights @ xv[:d] + self._beta + self._z @ xv[:d]
        if t.kind == "specialist":
            eta = eta + self._strengths[:, int(xv[d])]
            if xv[0] > t.high_value_threshold:
                eta = eta + self._closer
            if language != "en":
                eta = eta + self._native
        if language != "en":
            eta = eta - t.language_penalty * (~self._speaks[:, 0])
        return np.asarray(1.0 / (1.0 + np.exp(-eta)), dtype=float)

    def agent_features(self) -> dict[str, tuple[float, ...]]:
        """What the model may know of an agent: their proficiency. (Languages enter as a
        customer-agent feature, :meth:`pair`: as an agent feature, speaking Spanish was
        learnt as a skill for English customers too, and Spanish callers waited.)"""
        return {a.id: (float(a.proficiency),) for a in self.agents}

    @staticmethod
    def context(arrival: Arrival) -> tuple[float, ...]:
        """Interaction features the model may use."""
        return (float(arrival.language != "en"),)

    def pair(self, language: str, agent_ids: Sequence[str]) -> np.ndarray:
        """Customer-agent features the model may use: the agent speaks the language."""
        return np.array([[float(language in self._languages[a])] for a in agent_ids])

    def queue(
        self,
        *,
        strategy: Strategy = "longest_idle",
        predictive: PredictiveSettings | None = None,
    ) -> Queue:
        c = self.config
        return Queue(
            name="sales",
            media=frozenset({c.medium}),
            skills=(SkillRequirement(SKILL, 1),),
            language="en",
            strategy=strategy,
            rings=(Ring(c.language_ring_s, (SkillRequirement(SKILL, 1),), False),),
            predictive=predictive or PredictiveSettings(),
        )

    def core_agents(self, now_ms: int) -> list[Agent]:
        c = self.config
        return [
            Agent(
                id=a.id,
                skills={SKILL: a.proficiency},
                languages=a.languages,
                presence="offline",
                capacity={c.medium: c.capacity},
                load={c.medium: 0},
                idle_since_ms=now_ms,
                last_assigned_ms=0,
            )
            for a in self.agents
        ]

    def day_start_ms(self, day: int) -> int:
        """Day ``day`` counts weekdays only (the center is closed at weekends)."""
        return START_MS + (day // 5 * 7 + day % 5) * DAY_MS

    def arrival_rate(self, day: int, hour: int) -> float:
        """Mean calls per second expected in that hour (the profile's, before its noise)."""
        c, p = self.config, self.profile
        share = p.share_by_hour[p.hours.index(hour)]
        return c.calls_per_day * p.weekday_factor[day % 5] * share / 3600

    def staffing(self, day: int, hour: int) -> int:
        """Agents on shift in that hour for the configured occupancy."""
        c = self.config
        load = self.arrival_rate(day, hour) * c.mean_handle_s
        return min(c.agents, max(2, math.ceil(load / c.occupancy)))

    def arrivals(self, *, days: int, first_day: int = 0, seed: int = 0) -> list[Arrival]:
        """The calls of ``days`` weekdays from ``first_day``, in time order."""
        c, p = self.config, self.profile
        rng = np.random.default_rng([seed, 2, first_day])
        out: list[Arrival] = []
        k_day, k_hour = p.daily_cv**2, p.hourly_cv**2
        for day in range(first_day, first_day + days):
            start = self.day_start_ms(day)
            day_factor = rng.gamma(1 / k_day, k_day) if k_day > 0 else 1.0
            for hour, share in zip(p.hours, p.share_by_hour, strict=True):
                hour_factor = rng.gamma(1 / k_hour, k_hour) if k_hour > 0 else 1.0
                mean = c.calls_per_day * p.weekday_factor[day % 5] * share
                n = int(rng.poisson(mean * day_factor * hour_factor))
                times = np.sort(rng.random(n)) * HOUR_MS + start + hour * HOUR_MS
                out.extend(self._calls(rng, times, len(out), first_day))
        return out

    def _calls(
        self, rng: np.random.Generator, times: np.ndarray, k0: int, first_day: int
    ) -> list[Arrival]:
        """The calls at ``times``: every draw for them at once."""
        c, n = self.config, len(times)
        if c.patience == "exponential":
            patience = rng.exponential(c.patience_mean_s, n)
        else:
            mu = math.log(c.patience_mean_s) - c.patience_sigma**2 / 2
            patience = rng.lognormal(mu, c.patience_sigma, n)
        second = rng.random(n) < c.second_language_share
        x = rng.normal(0, 1, (n, c.truth.n_features))
        if c.truth.kind == "specialist":
            # Intents are uneven (a few common, some rare), the same mix every day.
            mix = np.random.default_rng([self._seed, 4]).dirichlet(np.full(c.truth.intents, 2.0))
            intent = rng.choice(c.truth.intents, size=n, p=mix)
            x = np.hstack([x, intent[:, None].astype(float)])
        handle = rng.lognormal(math.log(c.handle_median_s), c.handle_sigma, n)
        u = rng.random((n, 2))
        value = rng.lognormal(math.log(c.sale_value_median), c.sale_value_sigma, n)
        delay = rng.exponential(c.outcome_delay_mean_days * DAY_MS, n)
        return [
            Arrival(
                id=f"c{first_day}-{k0 + i}",
                customer_id=f"cust{first_day}-{k0 + i}",
                at_ms=int(times[i]),
                x=tuple(x[i].tolist()),
                language=c.second_language if second[i] else "en",
                patience_s=float(patience[i]),
                handle_base_s=float(handle[i]),
                u_outcome=float(u[i, 0]),
                u_code=float(u[i, 1]),
                sale_value=float(value[i]),
                outcome_delay_ms=int(delay[i]),
            )
            for i in range(n)
        ]
