"""Predictive routing, greedy: the agent most likely to achieve the queue's KPI for this
customer, one interaction at a time.

The policies share plain data: predicted scores (interaction id -> agent id -> predicted
KPI; the caller runs the model, batching the candidates of an interaction) and per-agent
:class:`Posterior` s for exploration. This module holds what they share and the
**greedy** policy (the anchor's): in waiting order, the best-scored free agent; standard
routing with fewer than ``min_free_agents`` free agents and after ``hold_timeout_s``; in
between, held while better-scored agents are busy. The joint **assignment** is in
:mod:`opportune.core.assignment`, the server's pass over the arms in :mod:`opportune.core.arms`.

Exploration (Thompson sampling over the posteriors, or ε-greedy) randomises the choice;
every :class:`~opportune.core.routing.Decision` carries the propensity of its agent under
the policy, for off-policy evaluation (:mod:`opportune.core.valuation`). Dry run scores and
records the would-be choice and assigns by standard routing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from opportune.core.routing import (
    Agent,
    Book,
    Decision,
    Hold,
    Interaction,
    Offer,
    PredictiveSettings,
    Queue,
    Routing,
    idle_key,
    occupancy,
    offers,
    standard_decision,
)

# A choice never seen in the propensity resamples counts as half a win, so the estimated
# propensity stays positive and an IPS weight finite.
UNSEEN_WINS = 0.5


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


def utility(score: float, settings: PredictiveSettings) -> float:
    """The score as a quantity to maximise: negated for KPIs that are minimised."""
    return score if settings.direction == "maximize" else -score


def scored_candidates(
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
        sorted(((a.id, row[a.id]) for a in free), key=lambda s: (-utility(s[1], settings), s[0]))
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


def describe_choice(
    scored: Sequence[tuple[str, float]], chosen: str, settings: PredictiveSettings
) -> str:
    """Why ``chosen``: its predicted KPI against the next best and the median."""
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
    return pick, max(wins, UNSEEN_WINS) / n, "Thompson sampling"


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

    >>> from opportune.core.routing import PredictiveSettings
    >>> ann, bob = Agent("ann", capacity={"chat": 1}), Agent("bob", capacity={"chat": 1})
    >>> sales = Queue("sales", predictive=PredictiveSettings(enabled=True, min_free_agents=1))
    >>> chat = Interaction("c1", "sales", "chat", arrived_at_ms=0)
    >>> routing = route_predictive_greedy(
    ...     [chat], [ann, bob], {"sales": sales}, 0, {"c1": {"ann": 0.2, "bob": 0.7}})
    >>> [(d.agent_id, d.method) for d in routing.decisions]
    [('bob', 'predictive')]
    """
    book = Book(agents, now_ms)
    decisions: list[Decision] = []
    held: list[Hold] = []
    for offer in offers(book, waiting, queues):
        if not offer.queue.predictive.enabled:
            decisions.append(standard_decision(book, *offer))
            continue
        made = _fallback(book, offer, scores) or _greedy_choice(
            book,
            offer,
            scores,
            held_since=held_since or {},
            posteriors=posteriors or {},
            rng=rng,
        )
        if isinstance(made, Hold):
            held.append(made)
        else:
            decisions.append(made)
    return Routing(tuple(decisions), tuple(held))


def _fallback(
    book: Book,
    offer: Offer,
    scores: Mapping[str, Mapping[str, float]],
) -> Decision | None:
    """Standard routing in a predictive queue, saying why: not scored, dry run, waited past
    the hold timeout, or too few free agents. None: the greedy policy decides."""
    interaction, queue, free = offer
    settings = queue.predictive
    wait_s = (book.now_ms - interaction.arrived_at_ms) / 1000
    scored = scored_candidates(interaction, free, scores, settings)
    if scored is None:
        return standard_decision(
            book, interaction, queue, free, method="fallback", reason="not scored"
        )
    if settings.dry_run:
        util = {a: utility(s, settings) for a, s in scored}
        would = _balanced_best(free, util, settings).id
        reason = f"dry run: predictive would choose {would}"
        return standard_decision(
            book,
            interaction,
            queue,
            free,
            method="dry_run",
            reason=reason,
            scores=scored,
            would_choose=would,
        )
    if wait_s >= settings.hold_timeout_s:
        reason = f"waited {wait_s:.0f} s ≥ hold timeout {settings.hold_timeout_s:.0f} s"
        return standard_decision(
            book, interaction, queue, free, method="fallback", reason=reason, scores=scored
        )
    if len(free) < settings.min_free_agents:
        reason = f"{len(free)} free agent(s) < {settings.min_free_agents}: not scored"
        return standard_decision(book, interaction, queue, free, reason=reason, scores=scored)
    return None


def _greedy_choice(
    book: Book,
    offer: Offer,
    scores: Mapping[str, Mapping[str, float]],
    *,
    held_since: Mapping[str, int],
    posteriors: Mapping[str, Posterior],
    rng: random.Random | None,
) -> Decision | Hold:
    """The best-scored free agent under the queue's exploration, or a hold for a better."""
    interaction, queue, free = offer
    settings = queue.predictive
    scored = scored_candidates(interaction, free, scores, settings)
    assert scored is not None  # _fallback routed the unscored
    util = {a: utility(s, settings) for a, s in scored}
    if settings.hold_for_better:
        hold = _hold_for_better(book, offer, scores, util, held_since)
        if hold is not None:
            return hold
    agent, propensity, how = _explore_greedy(free, util, settings, posteriors, rng)
    book.take(agent.id, interaction.medium)
    why = describe_choice(scored, agent.id, settings) + (f"; {how}" if how else "")
    return Decision(
        interaction.id,
        agent.id,
        "predictive",
        scored,
        propensity,
        why,
        candidates=tuple(a for a, _ in scored),
    )


def _hold_for_better(
    book: Book,
    offer: Offer,
    scores: Mapping[str, Mapping[str, float]],
    util: Mapping[str, float],
    held_since: Mapping[str, int],
) -> Hold | None:
    """A hold while the best free agent ranks below the share of the pool the wait allows."""
    interaction, queue, free = offer
    settings = queue.predictive
    now_ms = book.now_ms
    wait_s = (now_ms - interaction.arrived_at_ms) / 1000
    best = _balanced_best(free, util, settings)
    pool = [
        utility(scores[interaction.id][a.id], settings)
        for a in book.pool_for(interaction, queue)
        if a.id in scores[interaction.id]
    ]
    rank = sum(u > util[best.id] + settings.balance_margin for u in pool)
    # Acceptable: within the top ceil(n * wait / timeout) of the pool (at least one).
    if rank == 0 or wait_s * len(pool) > settings.hold_timeout_s * rank:
        return None
    when = settings.hold_timeout_s * rank / len(pool)
    recheck = interaction.arrived_at_ms + math.floor(when * 1000) + 1
    return Hold(
        interaction.id,
        held_since.get(interaction.id, now_ms),
        max(recheck, now_ms + 1),
        f"best free agent ranks {rank + 1} of {len(pool)}; holding for a better",
    )
