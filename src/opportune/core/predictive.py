"""Predictive routing: the agent most likely to achieve the queue's KPI for this customer.

Two methods over the same predicted scores (plain data: interaction id -> agent id ->
predicted KPI; the caller runs the model, batching the candidates of an interaction):

- **greedy** (the anchor's): one interaction at a time in waiting order, the best-scored
  free agent; standard routing with fewer than ``min_free_agents`` free agents and after
  ``hold_timeout_s``; in between, held while better-scored agents are busy;
- **assignment**: waiting interactions × free agent slots matched jointly
  (``scipy.optimize.linear_sum_assignment``), so that when interactions queue, a freed
  agent takes the interaction it is best for and several free agents split several
  waiting interactions to the best total.

Exploration (Thompson sampling over per-agent posteriors passed in as data, or ε-greedy)
randomises the choice; every :class:`~opportune.core.routing.Decision` carries the
propensity of its agent under the policy, for off-policy evaluation
(:mod:`opportune.core.valuation`). Dry run scores and records the would-be choice and
assigns by standard routing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from opportune.core.routing import (
    Agent,
    Book,
    Decision,
    Hold,
    Interaction,
    PredictiveSettings,
    Queue,
    Routing,
    apply,
    idle_key,
    occupancy,
    route_standard,
    spare,
    standard_decision,
    waiting_order,
)

# A choice never seen in the propensity resamples counts as half a win, so the estimated
# propensity stays positive and an IPS weight finite.
_UNSEEN_WINS = 0.5


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
        return min(near, key=lambda a: (occupancy(a), *idle_key(a)))
    return min(near, key=idle_key)


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
    book = Book(agents, now_ms)
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
            decisions.append(standard_decision(book, interaction, queue, free))
            continue
        wait_s = (now_ms - interaction.arrived_at_ms) / 1000
        scored = _scored(interaction, free, scores, settings)
        if scored is None:
            decisions.append(
                standard_decision(
                    book, interaction, queue, free, method="fallback", reason="not scored"
                )
            )
            continue
        util = {a: _utility(s, settings) for a, s in scored}
        if settings.dry_run:
            would = _balanced_best(free, util, settings).id
            reason = f"dry run: predictive would choose {would}"
            decisions.append(
                standard_decision(
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
                standard_decision(
                    book, interaction, queue, free, method="fallback", reason=reason, scores=scored
                )
            )
            continue
        if len(free) < settings.min_free_agents:
            reason = f"{len(free)} free agent(s) < {settings.min_free_agents}: not scored"
            decisions.append(
                standard_decision(book, interaction, queue, free, reason=reason, scores=scored)
            )
            continue
        if settings.hold_for_better:
            best = _balanced_best(free, util, settings)
            pool = [
                _utility(scores[interaction.id][a.id], settings)
                for a in book.pool_for(interaction, queue)
                if a.id in scores[interaction.id]
            ]
            rank = sum(u > util[best.id] + settings.balance_margin for u in pool)
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
        decisions.append(
            Decision(
                interaction.id,
                agent.id,
                "predictive",
                scored,
                propensity,
                why,
                candidates=tuple(a for a, _ in scored),
            )
        )
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
    book = Book(agents, now_ms)
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
            decisions.append(standard_decision(book, interaction, queue, free))
        elif settings.dry_run:
            w = would.get(interaction.id)
            decisions.append(
                standard_decision(
                    book,
                    interaction,
                    queue,
                    free,
                    method="dry_run",
                    reason=(
                        f"dry run: assignment would choose {w}"
                        if w
                        else "dry run: assignment would leave it waiting"
                    ),
                    scores=_scored(interaction, free, scores, settings) or (),
                    would_choose=w,
                )
            )
        else:
            assert since is not None
            reason = f"passed over {(now_ms - since) / 1000:.0f} s ≥ hold timeout"
            decisions.append(
                standard_decision(book, interaction, queue, free, method="fallback", reason=reason)
            )
    new, held = _assign_jointly(predictive, book, queues, scores, held_since, posteriors, rng)
    return Routing(tuple(decisions + new), held)


def _would_choose(
    dry: Sequence[Interaction],
    book: Book,
    queues: Mapping[str, Queue],
    scores: Mapping[str, Mapping[str, float]],
) -> dict[str, str]:
    """What the joint assignment would do for dry-run interactions, on a copy of the book."""
    shadow = Book(list(book.agents.values()), book.now_ms)
    plain = {
        n: replace(q, predictive=replace(q.predictive, dry_run=False, exploration="off"))
        for n, q in queues.items()
    }
    decisions, _ = _assign_jointly(dry, shadow, plain, scores, {}, {}, None)
    return {d.interaction_id: d.agent_id for d in decisions}


def _scarce_languages(book: Book) -> frozenset[str]:
    """Languages spoken by fewer than half of the available agents."""
    n = len(book.agents)
    count: dict[str, int] = {}
    for a in book.agents.values():
        for lang in a.languages:
            count[lang] = count.get(lang, 0) + 1
    return frozenset(lang for lang, k in count.items() if k * 2 < n)


def _spared(
    agent: Agent, interaction: Interaction, queue: Queue, scarce: frozenset[str]
) -> frozenset[str]:
    """The scarce languages ``agent`` speaks that ``interaction`` does not need."""
    return (agent.languages & scarce) - {interaction.language or queue.language}


def _reserve_cost(
    agent: Agent, interaction: Interaction, queue: Queue, scarce: frozenset[str]
) -> float:
    """What choosing ``agent`` for ``interaction`` gives up: ``reserve_weight`` per scarce
    language the agent speaks that this interaction does not need."""
    weight = queue.predictive.reserve_weight
    return weight * len(_spared(agent, interaction, queue, scarce)) if weight else 0.0


def _assign_jointly(
    candidates: Sequence[Interaction],
    book: Book,
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
                standard_decision(
                    book, interaction, queue, free, method="fallback", reason="not scored"
                )
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
    queue_of = [queues[i.queue] for i in rows]
    scarce = _scarce_languages(book)
    for r, (interaction, free) in enumerate(zip(rows, frees, strict=True)):
        ok = {a.id for a in free}
        settings = queues[interaction.queue].predictive
        for c, (agent_id, medium, _) in enumerate(columns):
            if agent_id in ok and medium == interaction.medium:
                valid[r, c] = True
                util[r, c] = _utility(scores[interaction.id][agent_id], settings) - (
                    _reserve_cost(book.agents[agent_id], interaction, queue_of[r], scarce)
                )
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
        rank = [a for a, _ in scored].index(agent_id)
        joint = f"joint assignment of {len(rows)} waiting to {len(columns)} free slot(s)"
        top = scored[0][0]
        queue = queues[interaction.queue]
        kept = _reserve_cost(book.agents[top], interaction, queue, scarce)
        if rank == 0:
            why = f"{_describe(scored, agent_id, settings)}; {joint}{how}"
        elif kept > 0 and not explore:
            langs = _spared(book.agents[top], interaction, queue, scarce)
            why = (
                f"predicted {settings.kpi_name} {dict(scored)[agent_id]:.3g}, "
                f"{rank + 1} of {len(scored)} free: {top} is kept for callers in "
                f"{', '.join(sorted(langs))} (reserve cost {kept:.3g}); {joint}"
            )
        else:
            why = (
                f"predicted {settings.kpi_name} {dict(scored)[agent_id]:.3g}, "
                f"{rank + 1} of {len(scored)} free: the {joint} gave better-scored agents "
                f"to other waiting interactions for a higher total{how}"
            )
        book.take(agent_id, interaction.medium)
        decisions.append(
            Decision(
                interaction.id,
                agent_id,
                "predictive",
                scored,
                propensity,
                why,
                candidates=tuple(a for a, _ in scored),
            )
        )
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


@dataclass(frozen=True, slots=True)
class ArmRouting:
    """One dispatch pass over interactions of several arms: each decision with its arm."""

    decisions: tuple[tuple[Decision, str], ...]
    held: tuple[Hold, ...] = ()


def route_arms(
    waiting: Sequence[Interaction],
    agents: Sequence[Agent],
    queues: Mapping[str, Queue],
    now_ms: int,
    *,
    arms: Mapping[str, str],
    modelled: frozenset[str] | set[str],
    scores: Mapping[str, Mapping[str, float]],
    held_since: Mapping[str, int] | None = None,
    posteriors: Mapping[str, Posterior] | None = None,
    rng: random.Random | None = None,
) -> ArmRouting:
    """The server's pass: interactions of the ``predictive`` arm in a predictive queue
    with a KPI model (``modelled`` queues) go first, by their queue's method (greedy,
    then joint assignment), which route, hold or fall back for each; everything else —
    the standard and control arms, queues without a model yet (the why says so) — then
    goes by standard routing to the agents left free. ``arms`` maps interaction id to
    arm (``standard`` when absent)."""
    by_id = {i.id: i for i in waiting}
    predictive = [
        i
        for i in waiting
        if arms.get(i.id) == "predictive"
        and queues[i.queue].predictive.enabled
        and i.queue in modelled
    ]
    made: list[tuple[Decision, str]] = []
    held: list[Hold] = []
    free = list(agents)
    for method in ("greedy", "assignment"):
        batch = [i for i in predictive if queues[i.queue].predictive.method == method]
        if not batch:
            continue
        policy = route_predictive_greedy if method == "greedy" else route_predictive_assignment
        routing = policy(
            batch,
            free,
            queues,
            now_ms,
            scores,
            held_since=held_since,
            posteriors=posteriors,
            rng=rng,
        )
        made += [(d, "predictive") for d in routing.decisions]
        held += routing.held
        free = apply(free, routing, by_id, now_ms)
    done = {i.id for i in predictive}
    rest = [i for i in waiting if i.id not in done]
    if rest:
        for d in route_standard(rest, free, queues, now_ms).decisions:
            arm = arms.get(d.interaction_id, "standard")
            if arm == "predictive":
                queue = by_id[d.interaction_id].queue
                kpi = queues[queue].predictive.kpi_name
                d = replace(
                    d, why=f"no {kpi} model for queue {queue} yet: standard routing; {d.why}"
                )
            made.append((d, arm))
    return ArmRouting(tuple(made), tuple(held))
