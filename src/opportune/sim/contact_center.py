"""A contact-center simulator (SimPy) with a hidden truth, driving the routing core.

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
Handle times are lognormal times a per-agent speed; wrap-up codes and delayed outcome
attributions (sale values) are drawn from the truth. Routing is done by the very functions
of :mod:`opportune.core.routing` and :mod:`opportune.core.predictive`, called with the
same plain data the server passes; randomness is drawn up front per arrival (common random
numbers), so different policies face the very same customers.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import simpy

from opportune.core.kpis import KPI, OutcomeAttribution, Touchpoint, credit, label
from opportune.core.predictive import (
    Posterior,
    route_predictive_assignment,
    route_predictive_greedy,
)
from opportune.core.routing import (
    Agent,
    Decision,
    Interaction,
    Medium,
    PredictiveSettings,
    Queue,
    Ring,
    Routing,
    SkillRequirement,
    Strategy,
    assign,
    average_speed_of_answer,
    release,
    route_standard,
    service_level,
    wake_times,
)
from opportune.ml.routing.model import TrainingSet

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
    n_features: int = 4
    base_rate: float = 0.15  # sale probability of an average customer and agent
    customer_sd: float = 0.6  # sd of a·x on the logit scale
    agent_sd: float = 0.2  # sd of β: agent skill, the same for every customer
    match: float = 0.25  # γ: sd of the match effect γ·⟨x, z⟩
    language_penalty: float = 0.7  # logit cost of serving in a second-best language
    proficiency_signal: float = 0.6  # correlation of the visible proficiency with β


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


@dataclass(frozen=True, slots=True)
class SimAgent:
    id: str
    beta: float
    z: tuple[float, ...]
    speed: float  # handle-time factor
    proficiency: int  # 1..5, visible, correlated with beta
    languages: frozenset[str]


@dataclass(frozen=True, slots=True)
class Arrival:
    """One customer's call with all its randomness drawn up front."""

    id: str
    customer_id: str
    at_ms: int
    x: tuple[float, ...]
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
        self.agents = [
            SimAgent(
                id=f"a{k:02d}",
                beta=float(beta[k]),
                z=tuple(float(v) for v in z[k]),
                speed=float(speed[k]),
                proficiency=int(proficiency[k]),
                languages=frozenset({"en", config.second_language} if bilingual[k] else {"en"}),
            )
            for k in range(config.agents)
        ]
        self._beta = beta
        self._z = z
        self._speaks = np.array([[config.second_language in a.languages] for a in self.agents])
        self._languages = {a.id: a.languages for a in self.agents}

    @cached_property
    def agent_ids(self) -> list[str]:
        return [a.id for a in self.agents]

    def true_p(self, x: Sequence[float], language: str) -> np.ndarray:
        """The true sale probability of this customer with every agent (in agent order)."""
        xv = np.asarray(x, dtype=float)
        eta = self.alpha0 + self.weights @ xv + self._beta + self._z @ xv
        if language != "en":
            eta = eta - self.config.truth.language_penalty * (~self._speaks[:, 0])
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

    def staffing(self, day: int, hour: int) -> int:
        """Agents on shift in that hour for the configured occupancy."""
        c, p = self.config, self.profile
        share = p.share_by_hour[p.hours.index(hour)]
        rate = c.calls_per_day * p.weekday_factor[day % 5] * share / 3600
        load = rate * c.mean_handle_s
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


# A scorer predicts the KPI of one arrival with each of the given agents (one batched call).
Scorer = Callable[[Arrival, Sequence[str]], np.ndarray]
RoutingMethod = Literal["standard", "greedy", "assignment"]


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    method: RoutingMethod
    queue: Queue
    scorer: Scorer | None = None
    posteriors: Mapping[str, Posterior] | None = None


@dataclass(frozen=True, slots=True)
class InteractionRecord:
    id: str
    customer_id: str
    arrived_ms: int
    x: tuple[float, ...]
    language: str
    answered_ms: int | None
    abandoned_ms: int | None
    agent_id: str | None
    handle_s: float
    true_p: float  # of the agent who answered (0 when abandoned)
    sale: bool
    wrap_up: str | None
    decision: Decision | None

    @property
    def wait_s(self) -> float:
        end = self.answered_ms if self.answered_ms is not None else self.abandoned_ms
        return ((end or self.arrived_ms) - self.arrived_ms) / 1000


@dataclass(slots=True)
class SimResult:
    records: list[InteractionRecord]
    attributions: list[OutcomeAttribution]
    busy_s: dict[str, float]
    available_s: dict[str, float]

    def metrics(self, answer_within_s: float = 20.0) -> dict[str, float]:
        """KPI, speed of answer, service level, abandonment and occupancy spread.

        ``kpi`` is the expected sale rate per offered call (the true probabilities of the
        pairs made; an abandoned call sells nothing): exact, so policies compare without
        outcome noise. ``kpi_observed`` counts the drawn sales.
        """
        answered = [r for r in self.records if r.answered_ms is not None]
        abandoned = [r for r in self.records if r.abandoned_ms is not None]
        offered = len(answered) + len(abandoned)
        occ = [self.busy_s.get(a, 0.0) / s for a, s in self.available_s.items() if s > 3600]
        return {
            "offered": float(offered),
            "kpi": sum(r.true_p for r in answered) / offered if offered else 0.0,
            "kpi_observed": sum(r.sale for r in answered) / offered if offered else 0.0,
            "asa_s": average_speed_of_answer([r.wait_s for r in answered]),
            "service_level": service_level(
                [r.wait_s for r in answered], [r.wait_s for r in abandoned], answer_within_s
            ),
            "abandonment": len(abandoned) / offered if offered else 0.0,
            "occupancy_mean": float(np.mean(occ)) if occ else 0.0,
            "occupancy_sd": float(np.std(occ)) if occ else 0.0,
            "predictive_share": (
                sum(r.decision is not None and r.decision.method == "predictive" for r in answered)
                / len(answered)
                if answered
                else 0.0
            ),
        }


class _Run:
    """One simulation: the SimPy environment and the state the routing core is fed."""

    def __init__(self, center: Center, stream: Sequence[Arrival], policy: Policy, seed: int):
        self.center = center
        self.policy = policy
        self.stream = stream
        self.origin_ms = center.day_start_ms(0) if not stream else _day_floor(stream[0].at_ms)
        self.env = simpy.Environment()
        self.rng = random.Random(seed)
        self.agents: dict[str, Agent] = {a.id: a for a in center.core_agents(self.origin_ms)}
        self.sim_agents = {a.id: a for a in center.agents}
        self.order = [a.id for a in center.agents]
        self.index = {a: k for k, a in enumerate(self.order)}
        self.queues = {policy.queue.name: policy.queue}
        self.waiting: dict[str, Interaction] = {}
        self.arrival: dict[str, Arrival] = {}
        self.scores: dict[str, dict[str, float]] = {}
        self.held_since: dict[str, int] = {}
        self.rechecks: set[int] = set()
        self.staff = 0
        self.closed = True
        self.records: list[InteractionRecord] = []
        self.attributions: list[OutcomeAttribution] = []
        self.busy_s: dict[str, float] = {a: 0.0 for a in self.order}
        self.available_s: dict[str, float] = {a: 0.0 for a in self.order}
        self.available_from: dict[str, float] = {}

    # ---- clock ----------------------------------------------------------------------------
    def now_ms(self) -> int:
        return self.origin_ms + round(self.env.now * 1000)

    def at(self, when_ms: int, fn: Callable[[], None]) -> None:
        ev = self.env.timeout(max(0.0, (when_ms - self.now_ms()) / 1000))
        ev.callbacks.append(lambda _e: fn())

    # ---- processes ------------------------------------------------------------------------
    def arrivals(self) -> Any:
        for a in self.stream:
            yield self.env.timeout(max(0.0, (a.at_ms - self.now_ms()) / 1000))
            self.arrive(a)

    def shifts(self) -> Any:
        if not self.stream:
            return
        hours = self.center.profile.hours
        first = (self.stream[0].at_ms - START_MS) // DAY_MS
        last = (self.stream[-1].at_ms - START_MS) // DAY_MS
        for cal_day in range(first, last + 1):
            if cal_day % 7 >= 5:
                continue
            day = cal_day // 7 * 5 + cal_day % 7
            start = START_MS + cal_day * DAY_MS
            for hour in hours:
                yield self.env.timeout(max(0.0, (start + hour * HOUR_MS - self.now_ms()) / 1000))
                self.closed = False
                self.set_staff(self.center.staffing(day, hour))
                self.dispatch()
            yield self.env.timeout(
                max(0.0, (start + (hours[-1] + 1) * HOUR_MS - self.now_ms()) / 1000)
            )
            self.closed = True
            self.close_if_drained()

    # ---- events ---------------------------------------------------------------------------
    def arrive(self, a: Arrival) -> None:
        c = self.center.config
        interaction = Interaction(
            id=a.id,
            queue=self.policy.queue.name,
            medium=c.medium,
            arrived_at_ms=self.now_ms(),
            language=a.language,
            customer_id=a.customer_id,
            features=a.x,
        )
        self.waiting[a.id] = interaction
        self.arrival[a.id] = a
        if self.policy.scorer is not None:
            values = self.policy.scorer(a, self.center.agent_ids)
            self.scores[a.id] = dict(zip(self.center.agent_ids, map(float, values), strict=True))
        self.at(interaction.arrived_at_ms + round(a.patience_s * 1000), lambda: self.abandon(a))
        for t in wake_times(interaction, self.policy.queue):
            self.recheck(t)
        self.dispatch()

    def abandon(self, a: Arrival) -> None:
        if a.id not in self.waiting:
            return
        interaction = self.waiting.pop(a.id)
        self.forget(a.id)
        self.records.append(
            InteractionRecord(
                a.id,
                a.customer_id,
                interaction.arrived_at_ms,
                a.x,
                a.language,
                None,
                self.now_ms(),
                None,
                0.0,
                0.0,
                False,
                None,
                None,
            )
        )
        self.close_if_drained()

    def recheck(self, when_ms: int) -> None:
        if when_ms in self.rechecks:
            return
        self.rechecks.add(when_ms)

        def fire() -> None:
            self.rechecks.discard(when_ms)
            self.dispatch()

        self.at(when_ms, fire)

    def dispatch(self) -> None:
        if not self.waiting:
            return
        now = self.now_ms()
        waiting = list(self.waiting.values())
        agents = [self.agents[a] for a in self.order]
        p = self.policy
        routing: Routing
        if p.method == "standard":
            routing = route_standard(waiting, agents, self.queues, now)
        else:
            route = route_predictive_greedy if p.method == "greedy" else route_predictive_assignment
            routing = route(
                waiting,
                agents,
                self.queues,
                now,
                self.scores,
                held_since=self.held_since,
                posteriors=p.posteriors,
                rng=self.rng,
            )
        for h in routing.held:
            self.held_since.setdefault(h.interaction_id, h.since_ms)
            self.recheck(h.recheck_at_ms)
        for d in routing.decisions:
            self.start(d, now)

    def start(self, decision: Decision, now: int) -> None:
        interaction = self.waiting.pop(decision.interaction_id)
        a = self.arrival[decision.interaction_id]
        sim_agent = self.sim_agents[decision.agent_id]
        self.agents[decision.agent_id] = assign(
            self.agents[decision.agent_id], interaction.medium, now
        )
        self.forget(a.id)
        p = float(self.center.true_p(a.x, a.language)[self.index[sim_agent.id]])
        handle_s = a.handle_base_s * sim_agent.speed
        self.busy_s[sim_agent.id] += handle_s
        sale = a.u_outcome < p
        code = SALE if sale else _other_code(a.u_code)
        self.records.append(
            InteractionRecord(
                a.id,
                a.customer_id,
                interaction.arrived_at_ms,
                a.x,
                a.language,
                now,
                None,
                sim_agent.id,
                handle_s,
                p,
                sale,
                code,
                decision,
            )
        )
        end_ms = now + round(handle_s * 1000)
        if sale:
            self.attributions.append(
                OutcomeAttribution(
                    outcome_id=f"o-{a.id}",
                    customer_id=a.customer_id,
                    value=round(a.sale_value, 2),
                    created_ms=end_ms + a.outcome_delay_ms,
                    touchpoints=(Touchpoint(a.id, sim_agent.id, interaction.medium, 1.0, now),),
                )
            )
        self.at(end_ms, lambda: self.finish(sim_agent.id, interaction.medium))

    def finish(self, agent_id: str, medium: Medium) -> None:
        self.agents[agent_id] = release(self.agents[agent_id], medium, self.now_ms())
        if self.index[agent_id] >= self.staff or self.closed:
            self.go(agent_id, "offline")
        self.dispatch()
        self.close_if_drained()

    def forget(self, interaction_id: str) -> None:
        self.scores.pop(interaction_id, None)
        self.held_since.pop(interaction_id, None)

    # ---- staffing -------------------------------------------------------------------------
    def go(self, agent_id: str, presence: Literal["available", "offline"]) -> None:
        agent = self.agents[agent_id]
        if agent.presence == presence:
            return
        if presence == "available":
            self.available_from[agent_id] = self.env.now
            idle = self.now_ms() if sum(agent.load.values()) == 0 else agent.idle_since_ms
            self.agents[agent_id] = _with(agent, presence="available", idle_since_ms=idle)
        else:
            self.available_s[agent_id] += self.env.now - self.available_from.pop(
                agent_id, self.env.now
            )
            self.agents[agent_id] = _with(agent, presence="offline")

    def set_staff(self, n: int) -> None:
        self.staff = n
        for k, agent_id in enumerate(self.order):
            if k < n:
                self.go(agent_id, "available")
            elif sum(self.agents[agent_id].load.values()) == 0:
                self.go(agent_id, "offline")

    def close_if_drained(self) -> None:
        """After closing time agents stay until the queue is empty, then leave."""
        if not self.closed or self.waiting:
            return
        for agent_id in self.order:
            if sum(self.agents[agent_id].load.values()) == 0:
                self.go(agent_id, "offline")

    def run(self) -> SimResult:
        self.env.process(self.arrivals())
        self.env.process(self.shifts())
        self.env.run()
        for agent_id in self.order:
            self.go(agent_id, "offline")
        self.records.sort(key=lambda r: r.arrived_ms)
        return SimResult(self.records, self.attributions, self.busy_s, self.available_s)


def _with(agent: Agent, **changes: Any) -> Agent:
    return replace(agent, **changes)


def _day_floor(ms: int) -> int:
    return START_MS + (ms - START_MS) // DAY_MS * DAY_MS


def _other_code(u: float) -> str:
    acc = 0.0
    for code, share in OTHER_CODES:
        acc += share
        if u < acc:
            return code
    return OTHER_CODES[-1][0]


def simulate(
    center: Center, stream: Sequence[Arrival], policy: Policy, *, seed: int = 0
) -> SimResult:
    """Run ``policy`` over the calls of ``stream`` (from :meth:`Center.arrivals`)."""
    return _Run(center, stream, policy, seed).run()


def oracle_scorer(center: Center) -> Scorer:
    """Scores by the true probabilities: the ceiling a learnt model aims at."""
    index = {a: k for k, a in enumerate(center.agent_ids)}

    def score(arrival: Arrival, agent_ids: Sequence[str]) -> np.ndarray:
        p = center.true_p(arrival.x, arrival.language)
        return p[[index[a] for a in agent_ids]]

    return score


def training_set(result: SimResult, center: Center, kpi: KPI = SALES_CONVERSION) -> TrainingSet:
    """The answered interactions of a run as model history, labelled by ``kpi``."""
    rows = [r for r in result.records if r.agent_id is not None]
    credited = credit(result.attributions, window_days=kpi.attribution_window_days)
    labels = [
        label(
            kpi,
            wrap_up_code=r.wrap_up,
            attributed_value=credited.get(r.id),
            handle_time_s=r.handle_s,
        )
        for r in rows
    ]
    lang = center.config.second_language
    speaks = {a.id: a.languages for a in center.agents}
    return TrainingSet(
        customer=np.array([r.x for r in rows], dtype=float).reshape(len(rows), -1),
        context=np.array([[float(r.language == lang)] for r in rows]).reshape(len(rows), 1),
        agents=np.array([r.agent_id for r in rows], dtype=object),
        labels=np.array(labels, dtype=float),
        times_ms=np.array([r.arrived_ms for r in rows], dtype=np.int64),
        pair=np.array([[float(r.language in speaks[r.agent_id or ""])] for r in rows]).reshape(
            len(rows), 1
        ),
    )
