"""A contact-center run (SimPy): one routing policy over the calls of a simulated center.

The center (:mod:`opportune.sim.center`) holds the hidden truth and draws the calls; this
module plays them through time. Each dispatch is the server's own pass: every call gets its
arm from :func:`opportune.core.valuation.assign_arm` and the waiting calls are routed by
:func:`opportune.core.arms.route_arms`, called with the same plain data the engine's
router passes, so what a benchmark measures is what production does. Randomness is drawn up
front per arrival (common random numbers), so different policies face the very same
customers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import simpy

from opportune.core.arms import route_arms
from opportune.core.kpis import KPI, OutcomeAttribution, Touchpoint, credit, label
from opportune.core.predictive import Posterior
from opportune.core.routing import (
    Agent,
    Decision,
    Interaction,
    Medium,
    Queue,
    assign,
    average_speed_of_answer,
    release,
    service_level,
    wake_times,
)
from opportune.core.valuation import assign_arm
from opportune.ml.routing.model import TrainingSet
from opportune.sim.center import (
    DAY_MS,
    HOUR_MS,
    OTHER_CODES,
    SALE,
    SALES_CONVERSION,
    START_MS,
    Arrival,
    Center,
)

# A scorer predicts the KPI of one arrival with each of the given agents (one batched call).
Scorer = Callable[[Arrival, Sequence[str]], np.ndarray]
RoutingMethod = Literal["standard", "greedy", "assignment"]


@dataclass(frozen=True, slots=True)
class Policy:
    """A routing policy to simulate: ``standard`` routing by the queue's strategy, or
    predictive routing by ``greedy`` choice or joint ``assignment`` on ``scorer``'s scores
    (no scorer: no model yet, so standard routing, as on the server). ``control_share``:
    the calls kept on standard routing as the permanent control (the queue's
    ``predictive.controlShare`` on the server; none by default, to measure the policy)."""

    name: str
    method: RoutingMethod
    queue: Queue
    scorer: Scorer | None = None
    posteriors: Mapping[str, Posterior] | None = None
    control_share: float = 0.0


@dataclass(frozen=True, slots=True)
class InteractionRecord:
    id: str
    customer_id: str
    arrived_ms: int
    x: tuple[float, ...]
    language: str
    answered_ms: int | None = None
    abandoned_ms: int | None = None
    agent_id: str | None = None
    handle_s: float = 0.0
    true_p: float = 0.0  # of the agent who answered (0 when abandoned)
    sale: bool = False
    wrap_up: str | None = None
    decision: Decision | None = None

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
        queue = policy.queue
        if policy.method != "standard":
            # route_arms takes the method from the queue's settings, as the server's does.
            queue = replace(queue, predictive=replace(queue.predictive, method=policy.method))
        self.queue = queue
        self.queues = {queue.name: queue}
        self.predictive = policy.method != "standard" and queue.predictive.enabled
        modelled = self.predictive and policy.scorer is not None
        self.modelled = frozenset({queue.name}) if modelled else frozenset[str]()
        self.arms: dict[str, str] = {}
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
                self.set_rates(day, hour)
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
            queue=self.queue.name,
            medium=c.medium,
            arrived_at_ms=self.now_ms(),
            language=a.language,
            customer_id=a.customer_id,
            features=a.x,
        )
        self.waiting[a.id] = interaction
        self.arrival[a.id] = a
        self.arms[a.id] = assign_arm(
            a.id,
            interaction.arrived_at_ms,
            predictive=self.predictive,
            control_share=self.policy.control_share,
        )
        if self.policy.scorer is not None:
            values = self.policy.scorer(a, self.center.agent_ids)
            self.scores[a.id] = dict(zip(self.center.agent_ids, map(float, values), strict=True))
        self.at(interaction.arrived_at_ms + round(a.patience_s * 1000), lambda: self.abandon(a))
        for t in wake_times(interaction, self.queue):
            self.recheck(t)
        self.dispatch()

    def abandon(self, a: Arrival) -> None:
        if a.id not in self.waiting:
            return
        interaction = self.waiting.pop(a.id)
        self.forget(a.id)
        self.records.append(_record(a, interaction.arrived_at_ms, abandoned_ms=self.now_ms()))
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
        """One dispatch pass, the server's: ``route_arms`` over every waiting call."""
        if not self.waiting:
            return
        now = self.now_ms()
        routing = route_arms(
            list(self.waiting.values()),
            [self.agents[a] for a in self.order],
            self.queues,
            now,
            arms=self.arms,
            modelled=self.modelled,
            scores=self.scores,
            held_since=self.held_since,
            posteriors=self.policy.posteriors,
            rng=self.rng,
        )
        for h in routing.held:
            self.held_since.setdefault(h.interaction_id, h.since_ms)
            self.recheck(h.recheck_at_ms)
        for d, _arm in routing.decisions:
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
            _record(
                a,
                interaction.arrived_at_ms,
                answered_ms=now,
                agent_id=sim_agent.id,
                handle_s=handle_s,
                true_p=p,
                sale=sale,
                wrap_up=code,
                decision=decision,
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
        self.arms.pop(interaction_id, None)

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

    def set_rates(self, day: int, hour: int) -> None:
        """The queue's figures the hold decision weighs, this hour's (as the server's come
        from the queue's document): arrival rate, mean handle time, patience, target."""
        c = self.center.config
        p = replace(
            self.queue.predictive,
            arrival_rate_per_s=self.center.arrival_rate(day, hour),
            mean_handle_s=c.mean_handle_s,
            patience_s=c.patience_mean_s,
        )
        self.queue = replace(self.queue, predictive=p)
        self.queues = {self.queue.name: self.queue}

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


def _record(a: Arrival, arrived_ms: int, **outcome: Any) -> InteractionRecord:
    """The record of call ``a``; ``outcome``: how it ended (the fields an abandon leaves)."""
    return InteractionRecord(
        id=a.id,
        customer_id=a.customer_id,
        arrived_ms=arrived_ms,
        x=a.x,
        language=a.language,
        **outcome,
    )


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
