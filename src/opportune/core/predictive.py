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
class HoldCall:
    """Whether to keep an interaction waiting for a better agent, and until when at most."""

    hold: bool
    expected_wait_s: float
    why: str
    recheck_after_s: float = 0.0  # of waiting in all: look again then (the target binds)


def hold_call(
    *,
    gain: float,
    best_free: float,
    waited_s: float,
    better_busy: int,
    free: int,
    settings: PredictiveSettings,
) -> HoldCall:
    """Hold for a better agent only when it pays: the expected KPI gain of the better
    agents (``gain``, utility over the best free one's ``best_free``) against the cost of
    the expected wait, within the queue's service-level target.

    With ``better_busy`` better agents busy and exponential handle times of mean
    ``mean_handle_s`` (the service rate), the first of them frees after
    ``mean_handle_s / better_busy`` on average. Holding is refused when

    - the chance that one frees before the caller's wait passes ``service_level_s`` is
      below ``service_level`` (the target: e.g. 80% answered within 20 s);
    - the arrivals expected meanwhile (``arrival_rate_per_s``) would take the free agents;
    - the gain, discounted by the chance the caller abandons meanwhile (``patience_s``),
      does not exceed the wait's cost: that abandon risk on the best free agent's KPI plus
      ``wait_cost_per_s`` for each second.

    >>> s = PredictiveSettings(enabled=True, mean_handle_s=240)
    >>> hold_call(gain=0.1, best_free=0.15, waited_s=0, better_busy=30, free=5, settings=s).hold
    True
    >>> hold_call(gain=0.1, best_free=0.15, waited_s=0, better_busy=3, free=5, settings=s).why
    'a better agent frees within 20 s with 22% chance < 80% target: not held'
    """
    if better_busy <= 0 or gain <= 0:
        return HoldCall(False, 0.0, "no better agent busy: not held")
    rate = better_busy / max(settings.mean_handle_s, 1e-9)
    wait = 1 / rate
    left = settings.service_level_s - waited_s
    chance = 1 - math.exp(-rate * left) if left > 0 else 0.0
    if chance < settings.service_level:
        return HoldCall(
            False,
            wait,
            f"a better agent frees within {settings.service_level_s:.0f} s with "
            f"{chance:.0%} chance < {settings.service_level:.0%} target: not held",
        )
    if settings.arrival_rate_per_s * wait >= free:
        return HoldCall(
            False,
            wait,
            f"{settings.arrival_rate_per_s * wait:.1f} arrivals expected in the {wait:.1f} s "
            f"wait would take the {free} free agent(s): not held",
        )
    abandon = min(1.0, wait / max(settings.patience_s, 1e-9))
    value = gain * (1 - abandon)
    cost = abandon * max(best_free, 0.0) + settings.wait_cost_per_s * wait
    if value <= cost:
        return HoldCall(
            False,
            wait,
            f"expected gain {value:.3g} ≤ wait cost {cost:.3g} ({wait:.1f} s): not held",
        )
    # The target binds again when the chance falls to the level: left = -ln(1 - SL) / rate.
    until = settings.service_level_s + math.log(1 - min(settings.service_level, 0.999999)) / rate
    return HoldCall(
        True,
        wait,
        f"{better_busy} better agent(s) busy, first free in ~{wait:.1f} s; expected gain "
        f"{value:.3g} > wait cost {cost:.3g}: holding",
        max(until, waited_s),
    )


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
        rule = _hold_for_better if settings.hold_rule == "anchor" else _hold_by_wait_cost
        hold = rule(book, offer, scores, util, held_since)
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


def _hold_by_wait_cost(
    book: Book,
    offer: Offer,
    scores: Mapping[str, Mapping[str, float]],
    util: Mapping[str, float],
    held_since: Mapping[str, int],
) -> Hold | None:
    """A hold while the busy better agents are worth their expected wait (:func:`hold_call`).
    Every agent state change re-runs the pass, so a better agent freeing takes the caller at
    once; ``recheck_at_ms`` is when the service-level target stops the hold."""
    interaction, queue, free = offer
    settings = queue.predictive
    now_ms = book.now_ms
    best = _balanced_best(free, util, settings)
    free_ids = {a.id for a in free}
    row = scores[interaction.id]
    better = [
        utility(row[a.id], settings)
        for a in book.pool_for(interaction, queue)
        if a.id in row
        and a.id not in free_ids
        and utility(row[a.id], settings) > util[best.id] + settings.balance_margin
    ]
    gain = float(np.mean(better)) - util[best.id] if better else 0.0
    call = hold_call(
        gain=gain,
        best_free=util[best.id],
        waited_s=(now_ms - interaction.arrived_at_ms) / 1000,
        better_busy=len(better),
        free=len(free),
        settings=settings,
    )
    if not call.hold:
        return None
    recheck = interaction.arrived_at_ms + math.floor(call.recheck_after_s * 1000) + 1
    return Hold(
        interaction.id,
        held_since.get(interaction.id, now_ms),
        max(recheck, now_ms + 1),
        call.why,
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
