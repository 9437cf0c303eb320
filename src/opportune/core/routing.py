"""Routing: which agent takes which waiting interaction, and why.

Pure functions over plain data (no I/O, no clock: ``now_ms`` is an argument; randomness only
through an explicit ``random.Random``). The live server and the contact-center simulator
call the very same functions.

- **Eligibility**: presence ``available``, spare capacity on the interaction's medium,
  queue membership, skills at a minimum proficiency and the customer's language, relaxed by
  the *bullseye* ring the interaction's wait has reached.
- **Standard routing**: waiting interactions in order (priority, then age), each to an
  eligible agent chosen by the queue's strategy.
- **Predictive routing**, greedy (the anchor's method: one interaction at a time, the best
  predicted free agent, held up to a timeout while better agents are busy, standard below
  ``min_free_agents`` free agents and after the timeout) or by assignment (several waiting
  interactions and free agent slots matched jointly with ``linear_sum_assignment``).
- Every assignment is a :class:`Decision`: method, candidate scores, the propensity of the
  choice under the policy, and a short reason.

Presence ``busy`` is a declared non-routable state (after-call work, a meeting); an agent
handling interactions stays ``available`` and its per-medium load says how full it is.
Capacity is per medium and independent across media.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

Medium = Literal["chat", "message", "voice"]
Presence = Literal["available", "busy", "away", "offline"]
Strategy = Literal["longest_idle", "round_robin", "least_occupied", "best_skill"]
Method = Literal["standard", "predictive", "fallback", "dry_run"]
Direction = Literal["maximize", "minimize"]
Exploration = Literal["off", "thompson", "epsilon_greedy"]
Balance = Literal["idle_time", "occupancy"]

# A choice never seen in the propensity resamples counts as half a win, so the estimated
# propensity stays positive and an IPS weight finite.
_UNSEEN_WINS = 0.5


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
    exploration: Exploration = "off"
    epsilon: float = 0.1
    propensity_draws: int = 200  # resamples to estimate a randomised choice's propensity
    balance: Balance = "idle_time"  # workload balancing among (near-)tied scores ...
    balance_margin: float = 0.0  # ... within this much of the best score
    direction: Direction = "maximize"  # handle time and churn are minimised
    window_factor: int = 4  # assignment: consider this many waiting per free slot
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


@dataclass(frozen=True, slots=True)
class Posterior:
    """An agent's uncertain effect: ``beta`` (a, b = alpha, beta) or ``normal`` (mean, sd).

    Thompson sampling adds ``draw - mean`` to the agent's predicted score, so the model's
    score stays the centre and only the agent's uncertainty is explored.
    """

    kind: Literal["beta", "normal"]
    a: float
    b: float

    def noise(self, rng: random.Random) -> float:
        if self.kind == "beta":
            return rng.betavariate(self.a, self.b) - self.a / (self.a + self.b)
        return rng.gauss(0.0, self.b)


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


def _occupancy(agent: Agent) -> float:
    cap = sum(agent.capacity.values())
    return sum(agent.load.values()) / cap if cap else 1.0


def _idle_key(agent: Agent) -> tuple[bool, int, str]:
    return (sum(agent.load.values()) > 0, agent.idle_since_ms, agent.id)


def _mean_proficiency(agent: Agent, queue: Queue) -> float:
    if not queue.skills:
        return 0.0
    return sum(agent.skills.get(s.skill, 0) for s in queue.skills) / len(queue.skills)


def longest_idle(candidates: Sequence[Agent], interaction: Interaction, queue: Queue) -> Agent:
    """The agent free of work the longest (agents holding work come after idle ones)."""
    return min(candidates, key=_idle_key)


def round_robin(candidates: Sequence[Agent], interaction: Interaction, queue: Queue) -> Agent:
    """The agent assigned least recently."""
    return min(candidates, key=lambda a: (a.last_assigned_ms, a.id))


def least_occupied(candidates: Sequence[Agent], interaction: Interaction, queue: Queue) -> Agent:
    """The agent with the smallest share of their capacity in use; then longest idle."""
    return min(candidates, key=lambda a: (_occupancy(a), *_idle_key(a)))


def best_skill(candidates: Sequence[Agent], interaction: Interaction, queue: Queue) -> Agent:
    """The highest mean proficiency on the queue's skills; then longest idle."""
    return min(candidates, key=lambda a: (-_mean_proficiency(a, queue), *_idle_key(a)))


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


class _Book:
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


def _standard(
    book: _Book,
    interaction: Interaction,
    queue: Queue,
    free: Sequence[Agent],
    *,
    method: Method = "standard",
    reason: str = "",
    scores: tuple[tuple[str, float], ...] = (),
    would_choose: str | None = None,
) -> Decision:
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
    )


def route_standard(
    waiting: Sequence[Interaction],
    agents: Sequence[Agent],
    queues: Mapping[str, Queue],
    now_ms: int,
) -> Routing:
    """Standard (ACD) routing: in waiting order, each interaction to an eligible agent
    chosen by its queue's strategy, while any is free."""
    book = _Book(agents, now_ms)
    decisions: list[Decision] = []
    for interaction in waiting_order(waiting, queues):
        if not book.any_free():
            break
        queue = queues[interaction.queue]
        free = book.free_for(interaction, queue)
        if free:
            decisions.append(_standard(book, interaction, queue, free))
    return Routing(tuple(decisions))


# ---- predictive -------------------------------------------------------------------------


def _utility(score: float, settings: PredictiveSettings) -> float:
    return score if settings.direction == "maximize" else -score


def _scored(
    interaction: Interaction,
    free: Sequence[Agent],
    scores: Mapping[str, Mapping[str, float]],
    settings: PredictiveSettings,
) -> tuple[tuple[str, float], ...] | None:
    """Candidates' scores, best first; None when a free candidate has no score."""
    row = scores.get(interaction.id, {})
    if any(a.id not in row for a in free):
        return None
    return tuple(
        sorted(((a.id, row[a.id]) for a in free), key=lambda s: (-_utility(s[1], settings), s[0]))
    )


def _balanced_best(
    free: Sequence[Agent], util: Mapping[str, float], settings: PredictiveSettings
) -> Agent:
    """The best utility; among those within ``balance_margin`` of it, the workload rule."""
    top = max(util[a.id] for a in free)
    near = [a for a in free if util[a.id] >= top - settings.balance_margin - 1e-12]
    if settings.balance == "occupancy":
        return min(near, key=lambda a: (_occupancy(a), *_idle_key(a)))
    return min(near, key=_idle_key)


def _describe(
    scored: Sequence[tuple[str, float]], chosen: str, settings: PredictiveSettings
) -> str:
    mine = dict(scored)[chosen]
    others = [s for a, s in scored if a != chosen]
    verb = "highest" if settings.direction == "maximize" else "lowest"
    text = f"{verb} predicted {settings.kpi_name} {mine:.3g} among {len(scored)} free"
    if others:
        text += f" (next {others[0]:.3g}, median {float(np.median(others)):.3g})"
    return text


def _explore_greedy(
    free: Sequence[Agent],
    util: Mapping[str, float],
    settings: PredictiveSettings,
    posteriors: Mapping[str, Posterior],
    rng: random.Random | None,
) -> tuple[Agent, float, str]:
    """The greedy choice under the queue's exploration, with its propensity."""
    best = _balanced_best(free, util, settings)
    if settings.exploration == "off" or len(free) == 1:
        return best, 1.0, ""
    if rng is None:
        raise ValueError("exploration needs an rng")
    if settings.exploration == "epsilon_greedy":
        eps, k = settings.epsilon, len(free)
        pick = free[rng.randrange(k)] if rng.random() < eps else best
        # Closed form: the greedy agent is chosen with 1 - eps + eps/k, any other with eps/k.
        return pick, (1 - eps) * (pick.id == best.id) + eps / k, f"epsilon-greedy (ε={eps})"

    def draw() -> Agent:
        noisy = {
            a.id: util[a.id] + (posteriors[a.id].noise(rng) if a.id in posteriors else 0.0)
            for a in free
        }
        return _balanced_best(free, noisy, settings)

    pick = draw()
    n = settings.propensity_draws
    wins = sum(draw().id == pick.id for _ in range(n))
    return pick, max(wins, _UNSEEN_WINS) / n, "Thompson sampling"


def route_predictive_greedy(
    waiting: Sequence[Interaction],
    agents: Sequence[Agent],
    queues: Mapping[str, Queue],
    now_ms: int,
    scores: Mapping[str, Mapping[str, float]],
    *,
    held_since: Mapping[str, int] | None = None,
    posteriors: Mapping[str, Posterior] | None = None,
    rng: random.Random | None = None,
) -> Routing:
    """The anchor's predictive routing, one interaction at a time in waiting order.

    ``scores[interaction id][agent id]`` is the predicted KPI for every available agent who
    qualifies (busy ones too: they rank the hold). With fewer than ``min_free_agents`` free
    agents, or after ``hold_timeout_s`` since arrival, routing is standard. Otherwise the
    best-scored free agent is taken once it ranks within the top share of all qualifying
    agents that grows linearly from the single best at arrival to all at the timeout;
    until then the interaction is held (``Routing.held``, with when to look again).
    """
    posteriors = posteriors or {}
    held_since = held_since or {}
    book = _Book(agents, now_ms)
    decisions: list[Decision] = []
    held: list[Hold] = []
    for interaction in waiting_order(waiting, queues):
        if not book.any_free():
            break
        queue = queues[interaction.queue]
        free = book.free_for(interaction, queue)
        if not free:
            continue
        settings = queue.predictive
        if not settings.enabled:
            decisions.append(_standard(book, interaction, queue, free))
            continue
        wait_s = (now_ms - interaction.arrived_at_ms) / 1000
        scored = _scored(interaction, free, scores, settings)
        if scored is None:
            decisions.append(
                _standard(book, interaction, queue, free, method="fallback", reason="not scored")
            )
            continue
        util = {a: _utility(s, settings) for a, s in scored}
        if settings.dry_run:
            would = _balanced_best(free, util, settings).id
            reason = f"dry run: predictive would choose {would}"
            decisions.append(
                _standard(
                    book,
                    interaction,
                    queue,
                    free,
                    method="dry_run",
                    reason=reason,
                    scores=scored,
                    would_choose=would,
                )
            )
            continue
        if wait_s >= settings.hold_timeout_s:
            reason = f"waited {wait_s:.0f} s ≥ hold timeout {settings.hold_timeout_s:.0f} s"
            decisions.append(
                _standard(
                    book, interaction, queue, free, method="fallback", reason=reason, scores=scored
                )
            )
            continue
        if len(free) < settings.min_free_agents:
            reason = f"{len(free)} free agent(s) < {settings.min_free_agents}: not scored"
            decisions.append(
                _standard(book, interaction, queue, free, reason=reason, scores=scored)
            )
            continue
        if settings.hold_for_better:
            best = _balanced_best(free, util, settings)
            pool = [
                _utility(scores[interaction.id][a.id], settings)
                for a in book.pool_for(interaction, queue)
                if a.id in scores[interaction.id]
            ]
            rank = sum(u > util[best.id] for u in pool)
            # Acceptable: within the top ceil(n * wait / timeout) of the pool (at least one).
            if rank > 0 and wait_s * len(pool) <= settings.hold_timeout_s * rank:
                when = settings.hold_timeout_s * rank / len(pool)
                recheck = interaction.arrived_at_ms + math.floor(when * 1000) + 1
                held.append(
                    Hold(
                        interaction.id,
                        held_since.get(interaction.id, now_ms),
                        max(recheck, now_ms + 1),
                        f"best free agent ranks {rank + 1} of {len(pool)}; holding for a better",
                    )
                )
                continue
        agent, propensity, how = _explore_greedy(free, util, settings, posteriors, rng)
        book.take(agent.id, interaction.medium)
        why = _describe(scored, agent.id, settings) + (f"; {how}" if how else "")
        decisions.append(Decision(interaction.id, agent.id, "predictive", scored, propensity, why))
    return Routing(tuple(decisions), tuple(held))


def _perturbed(
    util: np.ndarray,
    col_agents: Sequence[str],
    settings: PredictiveSettings,
    posteriors: Mapping[str, Posterior],
    rng: random.Random,
) -> np.ndarray:
    """One randomised utility matrix: Thompson noise per agent, or ε-rows made random."""
    out = util.copy()
    if settings.exploration == "thompson":
        noise = {a: posteriors[a].noise(rng) for a in set(col_agents) if a in posteriors}
        out += np.array([noise.get(a, 0.0) for a in col_agents])[None, :]
    elif settings.exploration == "epsilon_greedy":
        for r in range(out.shape[0]):
            if rng.random() < settings.epsilon:
                out[r] = [rng.random() for _ in range(out.shape[1])]
    return out


def _solve(util: np.ndarray, valid: np.ndarray) -> list[tuple[int, int]]:
    """Max-cardinality, then max-utility matching over the valid (row, column) pairs."""
    if not valid.any():
        return []
    lo, hi = float(util[valid].min()), float(util[valid].max())
    # A bonus per matched pair larger than any utility difference the matching could gain:
    # serving one more interaction always beats a better match for fewer.
    bonus = (hi - lo) * util.shape[0] + 1.0
    weight = np.where(valid, util - lo + bonus, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if valid[r, c]]


def route_predictive_assignment(
    waiting: Sequence[Interaction],
    agents: Sequence[Agent],
    queues: Mapping[str, Queue],
    now_ms: int,
    scores: Mapping[str, Mapping[str, float]],
    *,
    held_since: Mapping[str, int] | None = None,
    posteriors: Mapping[str, Posterior] | None = None,
    rng: random.Random | None = None,
) -> Routing:
    """Predictive routing by joint assignment: waiting interactions × free agent slots
    (an agent with spare capacity c appears c times), maximising the total predicted KPI
    over the most interactions that can be served now.

    Interactions in non-predictive or dry-run queues, those not scored, and those *passed
    over* (left waiting with an eligible agent free) for ``hold_timeout_s`` or longer, go
    first, by standard routing. The rest are matched within a window of the first
    ``window_factor`` × free slots in waiting order, which bounds how far a choice can
    overtake the waiting order. Exploration randomises the utilities; the propensity of a
    pair is then its frequency over ``propensity_draws`` re-runs of the randomisation.

    ``held_since`` maps an interaction to when it was first held (``Hold.since_ms``); the
    caller keeps each entry until the interaction leaves the queue.
    """
    posteriors = posteriors or {}
    held_since = held_since or {}
    book = _Book(agents, now_ms)
    order = waiting_order(waiting, queues)
    decisions: list[Decision] = []
    predictive: list[Interaction] = []
    dry = [
        i
        for i in order
        if queues[i.queue].predictive.enabled and queues[i.queue].predictive.dry_run
    ]
    would = _would_choose(dry, book, queues, scores) if dry else {}
    for interaction in order:
        queue = queues[interaction.queue]
        settings = queue.predictive
        since = held_since.get(interaction.id)
        overdue = since is not None and now_ms - since >= settings.hold_timeout_s * 1000
        if settings.enabled and not settings.dry_run and not overdue:
            predictive.append(interaction)
            continue
        free = book.free_for(interaction, queue)
        if not free:
            continue
        if not settings.enabled:
            decisions.append(_standard(book, interaction, queue, free))
        elif settings.dry_run:
            w = would.get(interaction.id)
            decisions.append(
                _standard(
                    book,
                    interaction,
                    queue,
                    free,
                    method="dry_run",
                    reason=f"dry run: assignment would choose {w}",
                    scores=_scored(interaction, free, scores, settings) or (),
                    would_choose=w,
                )
            )
        else:
            assert since is not None
            reason = f"passed over {(now_ms - since) / 1000:.0f} s ≥ hold timeout"
            decisions.append(
                _standard(book, interaction, queue, free, method="fallback", reason=reason)
            )
    new, held = _assign_jointly(predictive, book, queues, scores, held_since, posteriors, rng)
    return Routing(tuple(decisions + new), held)


def _would_choose(
    dry: Sequence[Interaction],
    book: _Book,
    queues: Mapping[str, Queue],
    scores: Mapping[str, Mapping[str, float]],
) -> dict[str, str]:
    """What the joint assignment would do for dry-run interactions, on a copy of the book."""
    shadow = _Book(list(book.agents.values()), book.now_ms)
    plain = {
        n: replace(q, predictive=replace(q.predictive, dry_run=False, exploration="off"))
        for n, q in queues.items()
    }
    decisions, _ = _assign_jointly(dry, shadow, plain, scores, {}, {}, None)
    return {d.interaction_id: d.agent_id for d in decisions}


def _assign_jointly(
    candidates: Sequence[Interaction],
    book: _Book,
    queues: Mapping[str, Queue],
    scores: Mapping[str, Mapping[str, float]],
    held_since: Mapping[str, int],
    posteriors: Mapping[str, Posterior],
    rng: random.Random | None,
) -> tuple[list[Decision], tuple[Hold, ...]]:
    slots = sum(
        max(0, sum(a.capacity.values()) - sum(a.load.values())) for a in book.agents.values()
    )
    if not candidates or slots == 0:
        return [], ()
    rows: list[Interaction] = []
    frees: list[list[Agent]] = []
    decisions: list[Decision] = []
    for interaction in candidates:
        if len(rows) >= slots * max(1, queues[interaction.queue].predictive.window_factor):
            break
        queue = queues[interaction.queue]
        free = book.free_for(interaction, queue)
        if not free:
            continue
        if _scored(interaction, free, scores, queue.predictive) is None:
            decisions.append(
                _standard(book, interaction, queue, free, method="fallback", reason="not scored")
            )
            continue
        rows.append(interaction)
        frees.append(free)
    if not rows:
        return decisions, ()
    columns = [
        (a.id, m, k)
        for a in book.agents.values()
        for m in sorted({i.medium for i in rows})
        for k in range(spare(a, m))
    ]
    util = np.zeros((len(rows), len(columns)))
    valid = np.zeros((len(rows), len(columns)), dtype=bool)
    for r, (interaction, free) in enumerate(zip(rows, frees, strict=True)):
        ok = {a.id for a in free}
        settings = queues[interaction.queue].predictive
        for c, (agent_id, medium, _) in enumerate(columns):
            if agent_id in ok and medium == interaction.medium:
                valid[r, c] = True
                util[r, c] = _utility(scores[interaction.id][agent_id], settings)
    col_agents = [c[0] for c in columns]
    # One exploration setting per call: the first row's queue decides (queues share it in
    # practice; mixing randomised and plain rows in one matching has no clear propensity).
    settings0 = queues[rows[0].queue].predictive
    explore = settings0.exploration != "off"
    if explore and rng is None:
        raise ValueError("exploration needs an rng")
    draw = _perturbed(util, col_agents, settings0, posteriors, rng) if explore and rng else util
    pairs = _solve(draw, valid)
    freq: dict[tuple[int, str], int] = {}
    if explore and rng is not None:
        for _ in range(settings0.propensity_draws):
            for r, c in _solve(_perturbed(util, col_agents, settings0, posteriors, rng), valid):
                freq[(r, col_agents[c])] = freq.get((r, col_agents[c]), 0) + 1
    assigned: set[int] = set()
    for r, c in pairs:
        interaction, agent_id = rows[r], col_agents[c]
        settings = queues[interaction.queue].predictive
        scored = _scored(interaction, frees[r], scores, settings) or ()
        propensity = 1.0
        how = ""
        if explore:
            n = settings0.propensity_draws
            propensity = max(freq.get((r, agent_id), 0), _UNSEEN_WINS) / n
            how = "; Thompson sampling" if settings0.exploration == "thompson" else "; ε-greedy"
        why = (
            _describe(scored, agent_id, settings)
            + f"; joint assignment of {len(rows)} waiting to {len(columns)} free slot(s)"
            + how
        )
        book.take(agent_id, interaction.medium)
        decisions.append(Decision(interaction.id, agent_id, "predictive", scored, propensity, why))
        assigned.add(r)
    held = tuple(
        Hold(
            i.id,
            held_since.get(i.id, book.now_ms),
            held_since.get(i.id, book.now_ms)
            + round(queues[i.queue].predictive.hold_timeout_s * 1000),
            "passed over by the joint assignment",
        )
        for r, i in enumerate(rows)
        if r not in assigned
    )
    return decisions, held


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
