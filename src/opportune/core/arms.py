"""The server's dispatch pass over the experiment's arms: predictive first, then standard.

>>> from opportune.core.routing import Agent, Interaction, Queue
>>> chat = Interaction("c1", "sales", "chat", arrived_at_ms=0)
>>> passed = route_arms([chat], [Agent("ann", capacity={"chat": 1})], {"sales": Queue("sales")},
...                     0, arms={}, modelled=set(), scores={})
>>> [(d.agent_id, arm) for d, arm in passed.decisions]
[('ann', 'standard')]
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from opportune.core.assignment import route_predictive_assignment
from opportune.core.predictive import Posterior, route_predictive_greedy
from opportune.core.routing import (
    Agent,
    Decision,
    Hold,
    Interaction,
    Queue,
    apply,
    route_standard,
)


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
