"""Routing: which agent takes which waiting interaction, and why.

Pure functions over plain data (no I/O, no clock: ``now_ms`` is an argument; randomness only
through an explicit ``random.Random``). The live server and the contact-center simulator
call the very same functions.

- **Eligibility**: presence ``available``, spare capacity on the interaction's medium,
  queue membership, skills at a minimum proficiency and the customer's language, relaxed by
  the *bullseye* ring the interaction's wait has reached.
- **Standard routing**: waiting interactions in order (priority, then age), each to an
  eligible agent chosen by the queue's strategy.
- **Predictive routing** is greedy in :mod:`opportune.core.predictive`, joint assignment in
  :mod:`opportune.core.assignment`, and the server's pass over the arms in
  :mod:`opportune.core.arms`, over the same types and eligibility.
- Every assignment is a :class:`Decision`: method, candidate scores, the propensity of the
  choice under the policy, and a short reason.

Presence ``busy`` is a declared non-routable state (after-call work, a meeting); an agent
handling interactions stays ``available`` and its per-medium load says how full it is.
Capacity is per medium and independent across media.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

Medium = Literal["chat", "message", "voice"]
Presence = Literal["available", "busy", "away", "offline"]
Strategy = Literal["longest_idle", "round_robin", "least_occupied", "best_skill"]
Method = Literal["standard", "predictive", "fallback", "dry_run"]
Direction = Literal["maximize", "minimize"]
Exploration = Literal["off", "thompson", "epsilon_greedy"]
Balance = Literal["idle_time", "occupancy"]


@dataclass(frozen=True, slots=True)
class SkillRequirement:
    skill: str
    min_proficiency: int = 1  # proficiencies run 1..5


@dataclass(frozen=True, slots=True)
class Ring:
    """A bullseye ring: from ``after_wait_s`` of waiting, these requirements apply instead."""

    after_wait_s: float
    skills: tuple[SkillRequirement, ...]
    require_language: bool = True


@dataclass(frozen=True, slots=True)
class PredictiveSettings:
    """How a queue uses predicted KPI scores. Off by default."""

    enabled: bool = False
    dry_run: bool = False  # score and log the would-be choice, assign by standard routing
    hold_timeout_s: float = 12.0
    min_free_agents: int = 4  # greedy scores only from this many free agents (anchor: 4)
    hold_for_better: bool = True  # greedy: hold while better-scored agents are busy
    # How the greedy hold decides: "wait_cost" weighs the expected KPI gain against the
    # expected wait and the service-level target (core/predictive.hold_call); "anchor":
    # the anchor's pool widening linearly from the best agent to all by the timeout.
    hold_rule: Literal["wait_cost", "anchor"] = "wait_cost"
    # The queue's figures the wait-cost hold uses: answered within service_level_s for
    # service_level of callers; mean handle time (service rate); arrival rate (0: unknown);
    # mean patience; and the KPI a second of expected wait costs beyond the abandon risk.
    service_level: float = 0.8
    service_level_s: float = 20.0
    mean_handle_s: float = 300.0
    arrival_rate_per_s: float = 0.0
    patience_s: float = 120.0
    wait_cost_per_s: float = 0.002
    exploration: Exploration = "off"
    epsilon: float = 0.1
    propensity_draws: int = 200  # resamples to estimate a randomised choice's propensity
    balance: Balance = "idle_time"  # workload balancing among (near-)tied scores ...
    balance_margin: float = 0.0  # ... within this much of the best score
    direction: Direction = "maximize"  # handle time and churn are minimised
    window_factor: int = 4  # assignment: consider this many waiting per free slot
    method: Literal["greedy", "assignment"] = "assignment"  # what route_arms calls
    # Utility given up per scarce language (spoken by under half the available agents) an
    # agent speaks that the interaction does not need: keeps such agents, when the scores
    # are close, for the callers only they can serve.
    reserve_weight: float = 0.0
    kpi_name: str = "KPI"


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    media: frozenset[Medium] = frozenset({"chat"})
    skills: tuple[SkillRequirement, ...] = ()
    language: str | None = None  # required when the interaction names none
    priority: int = 0  # added to each interaction's own priority
    strategy: Strategy = "longest_idle"
    rings: tuple[Ring, ...] = ()
    predictive: PredictiveSettings = field(default_factory=PredictiveSettings)

    def __post_init__(self) -> None:
        waits = [r.after_wait_s for r in self.rings]
        if waits != sorted(waits):
            raise ValueError(f"queue {self.name!r}: rings must be in order of after_wait_s")


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    skills: Mapping[str, int] = field(default_factory=dict)  # skill -> proficiency 1..5
    languages: frozenset[str] = frozenset()
    presence: Presence = "available"
    capacity: Mapping[str, int] = field(default_factory=dict)  # medium -> max at once
    load: Mapping[str, int] = field(default_factory=dict)  # medium -> held now
    idle_since_ms: int = 0  # when the agent last became free of all work
    last_assigned_ms: int = 0
    queues: frozenset[str] | None = None  # None: member of every queue


@dataclass(frozen=True, slots=True)
class Interaction:
    id: str
    queue: str
    medium: Medium
    arrived_at_ms: int
    language: str | None = None
    priority: int = 0
    customer_id: str = ""
    features: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """One assignment, with the evidence for it."""

    interaction_id: str
    agent_id: str
    method: Method
    scores: tuple[tuple[str, float], ...]  # every free candidate's score, best first
    propensity: float  # probability of this agent under the policy (1.0: deterministic)
    why: str
    would_choose: str | None = None  # dry run: the predictive choice
    # The agents that were eligible and free: what an off-policy estimate of another
    # policy on this decision may choose among.
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Hold:
    """An interaction deliberately left waiting although an eligible agent was free."""

    interaction_id: str
    since_ms: int
    recheck_at_ms: int  # route again by then even if nothing else happens
    why: str


@dataclass(frozen=True, slots=True)
class Routing:
    decisions: tuple[Decision, ...]
    held: tuple[Hold, ...] = ()


# ---- eligibility ------------------------------------------------------------------------


def requirements(queue: Queue, wait_s: float) -> tuple[tuple[SkillRequirement, ...], bool]:
    """Skills and whether the language is required, for the bullseye ring ``wait_s`` reached."""
    skills, language = queue.skills, True
    for ring in queue.rings:
        if wait_s >= ring.after_wait_s:
            skills, language = ring.skills, ring.require_language
    return skills, language


def qualifies(agent: Agent, interaction: Interaction, queue: Queue, now_ms: int) -> bool:
    """Membership, medium, skills and language: whether the agent could ever take it now,
    whatever their presence and load."""
    if agent.queues is not None and queue.name not in agent.queues:
        return False
    if interaction.medium not in queue.media or agent.capacity.get(interaction.medium, 0) <= 0:
        return False
    skills, need_language = requirements(queue, (now_ms - interaction.arrived_at_ms) / 1000)
    for s in skills:
        if agent.skills.get(s.skill, 0) < s.min_proficiency:
            return False
    language = interaction.language or queue.language
    return not (need_language and language is not None and language not in agent.languages)


def spare(agent: Agent, medium: str) -> int:
    return agent.capacity.get(medium, 0) - agent.load.get(medium, 0)


def eligible(agent: Agent, interaction: Interaction, queue: Queue, now_ms: int) -> bool:
    """May ``agent`` be given ``interaction`` now: available, with capacity, qualified."""
    return (
        agent.presence == "available"
        and spare(agent, interaction.medium) > 0
        and qualifies(agent, interaction, queue, now_ms)
    )


def waiting_order(waiting: Iterable[Interaction], queues: Mapping[str, Queue]) -> list[Interaction]:
    """Highest priority (queue's plus the interaction's) first, then the longest waiting."""
    return sorted(
        waiting,
        key=lambda i: (-(queues[i.queue].priority + i.priority), i.arrived_at_ms, i.id),
    )


def wake_times(interaction: Interaction, queue: Queue) -> tuple[int, ...]:
    """When eligibility or method may change with no other event: rings and the timeout."""
    times = [interaction.arrived_at_ms + round(r.after_wait_s * 1000) for r in queue.rings]
    if queue.predictive.enabled and not queue.predictive.dry_run:
        times.append(interaction.arrived_at_ms + round(queue.predictive.hold_timeout_s * 1000))
    return tuple(sorted(times))


# ---- agent state ------------------------------------------------------------------------


def assign(agent: Agent, medium: str, now_ms: int) -> Agent:
    """The agent after taking one more interaction of ``medium``."""
    load = dict(agent.load)
    load[medium] = load.get(medium, 0) + 1
    return replace(agent, load=load, last_assigned_ms=now_ms)


def release(agent: Agent, medium: str, now_ms: int) -> Agent:
    """The agent after finishing one interaction of ``medium``; idle from now if free."""
    load = dict(agent.load)
    load[medium] = max(0, load.get(medium, 0) - 1)
    idle = now_ms if sum(load.values()) == 0 else agent.idle_since_ms
    return replace(agent, load=load, idle_since_ms=idle)


def apply(
    agents: Sequence[Agent], routing: Routing, interactions: Mapping[str, Interaction], now_ms: int
) -> list[Agent]:
    """``agents`` after the routing's assignments (``interactions`` by id, for the medium)."""
    by_id = {a.id: a for a in agents}
    for d in routing.decisions:
        by_id[d.agent_id] = assign(by_id[d.agent_id], interactions[d.interaction_id].medium, now_ms)
    return [by_id[a.id] for a in agents]


# ---- standard strategies ----------------------------------------------------------------


def occupancy(agent: Agent) -> float:
    cap = sum(agent.capacity.values())
    return sum(agent.load.values()) / cap if cap else 1.0


def idle_key(agent: Agent) -> tuple[bool, int, str]:
    return (sum(agent.load.values()) > 0, agent.idle_since_ms, agent.id)


def _mean_proficiency(agent: Agent, queue: Queue) -> float:
    if not queue.skills:
        return 0.0
    return sum(agent.skills.get(s.skill, 0) for s in queue.skills) / len(queue.skills)


def longest_idle(candidates: Sequence[Agent], interaction: Interaction, queue: Queue) -> Agent:
    """The agent free of work the longest (agents holding work come after idle ones)."""
    return min(candidates, key=idle_key)


def round_robin(candidates: Sequence[Agent], interaction: Interaction, queue: Queue) -> Agent:
    """The agent assigned least recently."""
    return min(candidates, key=lambda a: (a.last_assigned_ms, a.id))


def least_occupied(candidates: Sequence[Agent], interaction: Interaction, queue: Queue) -> Agent:
    """The agent with the smallest share of their capacity in use; then longest idle."""
    return min(candidates, key=lambda a: (occupancy(a), *idle_key(a)))


def best_skill(candidates: Sequence[Agent], interaction: Interaction, queue: Queue) -> Agent:
    """The highest mean proficiency on the queue's skills; then longest idle."""
    return min(candidates, key=lambda a: (-_mean_proficiency(a, queue), *idle_key(a)))


STRATEGIES: Mapping[Strategy, Callable[[Sequence[Agent], Interaction, Queue], Agent]] = {
    "longest_idle": longest_idle,
    "round_robin": round_robin,
    "least_occupied": least_occupied,
    "best_skill": best_skill,
}

_STRATEGY_WORDS = {
    "longest_idle": "longest idle",
    "round_robin": "round robin",
    "least_occupied": "least occupied",
    "best_skill": "best skill",
}


class Book:
    """The agents as they stand within one routing call, assignments included."""

    def __init__(self, agents: Sequence[Agent], now_ms: int) -> None:
        self.now_ms = now_ms
        self.agents = {a.id: a for a in agents if a.presence == "available"}

    def free_for(self, interaction: Interaction, queue: Queue) -> list[Agent]:
        return [a for a in self.agents.values() if eligible(a, interaction, queue, self.now_ms)]

    def pool_for(self, interaction: Interaction, queue: Queue) -> list[Agent]:
        """Available agents who qualify, whatever their load (the anchor's ranking pool)."""
        return [a for a in self.agents.values() if qualifies(a, interaction, queue, self.now_ms)]

    def take(self, agent_id: str, medium: str) -> None:
        self.agents[agent_id] = assign(self.agents[agent_id], medium, self.now_ms)

    def any_free(self) -> bool:
        return any(sum(a.capacity.values()) > sum(a.load.values()) for a in self.agents.values())


def standard_decision(
    book: Book,
    interaction: Interaction,
    queue: Queue,
    free: Sequence[Agent],
    *,
    method: Method = "standard",
    reason: str = "",
    scores: tuple[tuple[str, float], ...] = (),
    would_choose: str | None = None,
) -> Decision:
    """Assign ``interaction`` to the queue strategy's pick among ``free``, in ``book``."""
    agent = STRATEGIES[queue.strategy](free, interaction, queue)
    book.take(agent.id, interaction.medium)
    why = f"{_STRATEGY_WORDS[queue.strategy]} among {len(free)} eligible"
    return Decision(
        interaction.id,
        agent.id,
        method,
        scores,
        1.0,
        f"{reason}; {why}" if reason else why,
        would_choose,
        tuple(a.id for a in free),
    )


class Offer(NamedTuple):
    """A waiting interaction, its queue, and the agents free for it now."""

    interaction: Interaction
    queue: Queue
    free: list[Agent]


def offers(
    book: Book, waiting: Iterable[Interaction], queues: Mapping[str, Queue]
) -> Iterator[Offer]:
    """The waiting interactions in order that some agent is free for, while any agent is;
    lazy, so that what the caller takes from ``book`` counts for the next one."""
    for interaction in waiting_order(waiting, queues):
        if not book.any_free():
            return
        queue = queues[interaction.queue]
        free = book.free_for(interaction, queue)
        if free:
            yield Offer(interaction, queue, free)


def route_standard(
    waiting: Sequence[Interaction],
    agents: Sequence[Agent],
    queues: Mapping[str, Queue],
    now_ms: int,
) -> Routing:
    """Standard (ACD) routing: in waiting order, each interaction to an eligible agent
    chosen by its queue's strategy, while any is free.

    >>> agent = Agent("ann", capacity={"chat": 1})
    >>> chat = Interaction("c1", "sales", "chat", arrived_at_ms=0)
    >>> d = route_standard([chat], [agent], {"sales": Queue("sales")}, 1_000).decisions[0]
    >>> d.agent_id, d.method, d.why
    ('ann', 'standard', 'longest idle among 1 eligible')
    """
    book = Book(agents, now_ms)
    decisions = [standard_decision(book, *offer) for offer in offers(book, waiting, queues)]
    return Routing(tuple(decisions))


# ---- service level ----------------------------------------------------------------------


def service_level(
    answer_waits_s: Sequence[float],
    abandon_waits_s: Sequence[float],
    within_s: float,
    *,
    short_abandon_s: float = 0.0,
) -> float:
    """Share of offered interactions answered within ``within_s``; abandons sooner than
    ``short_abandon_s`` are left out of the count (nobody could have helped them)."""
    offered = len(answer_waits_s) + sum(w >= short_abandon_s for w in abandon_waits_s)
    if offered == 0:
        return 1.0
    return sum(w <= within_s for w in answer_waits_s) / offered


def abandonment_rate(answered: int, abandoned: int) -> float:
    """Share of offered interactions that left before an agent answered."""
    offered = answered + abandoned
    return abandoned / offered if offered else 0.0


def average_speed_of_answer(answer_waits_s: Sequence[float]) -> float:
    """Mean wait of the answered interactions (ASA)."""
    return float(sum(answer_waits_s) / len(answer_waits_s)) if answer_waits_s else 0.0


def staffing(queue: Queue, agents: Iterable[Agent], now_ms: int) -> tuple[int, int]:
    """``(agents available, chat slots busy)`` for the queue's pacing: agents present and
    qualified for a chat in it, and their chats in progress (of any queue: a busy slot is
    busy whatever queue filled it).

    >>> q = Queue(name="loans", media=frozenset({"chat"}))
    >>> ana = Agent(id="ana", presence="available", capacity={"chat": 2}, load={"chat": 1})
    >>> ben = Agent(id="ben", presence="away", capacity={"chat": 2})
    >>> staffing(q, [ana, ben], 0)
    (1, 1)
    """
    probe = Interaction(id="", queue=queue.name, medium="chat", arrived_at_ms=now_ms)
    present = [
        a for a in agents if a.presence == "available" and qualifies(a, probe, queue, now_ms)
    ]
    return len(present), sum(a.load.get("chat", 0) for a in present)


def member_of(agent: Agent, queues: Iterable[Queue]) -> frozenset[str]:
    """The queues an agent belongs to: named in their membership (or all, without one) and
    whose skills they have from the first minute — not the wider rings a long wait opens.

    >>> loans = Queue(name="loans", media=frozenset({"chat"}),
    ...               skills=(SkillRequirement("loans", 2),))
    >>> sorted(member_of(Agent(id="dev", skills={"cards": 5}, capacity={"chat": 3}), [loans]))
    []
    """
    out = set()
    for q in queues:
        medium = next((m for m in sorted(q.media) if agent.capacity.get(m, 0) > 0), None)
        if medium is None:
            continue
        probe = Interaction(id="", queue=q.name, medium=medium, arrived_at_ms=0)
        base = Queue(name=q.name, media=q.media, skills=q.skills)
        if qualifies(agent, probe, base, 0):
            out.add(q.name)
    return frozenset(out)
