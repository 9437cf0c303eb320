"""Pacing: offer a chat only while agents are predicted to be able to take it in time.

Queueing models over plain numbers (no I/O, no clock). The queue is an M/M/N system:
chats arrive at rate ``arrival_rate`` (per second), each takes an exponential handle time
with mean ``handle_time_s`` and occupies one of ``servers`` slots (agents × chats each).
Erlang C assumes nobody leaves the queue; Erlang A (Palm's M/M/N+M) lets waiting customers
abandon at rate 1/``patience_s`` — closer to web chat, where visitors give up.

The pacing decision adds the load that pending and new offers will bring (offers ×
acceptance rate) and offers only while the predicted service level stays on target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from opportune.core.action_types import OFFER_LIFETIME_MS

# Above this many states the truncated birth-death chain of Erlang A holds all but a
# negligible tail of the probability mass for any load a single queue sees.
_MAX_QUEUE = 400
# Loads this close to the number of servers count as saturated (float noise in λ/μ).
_EPS = 1e-9


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arriving customer waits (Erlang C), for ``offered_load`` = λ/μ.

    Computed with the numerically stable Erlang B recursion.

    >>> round(erlang_c(11, 10.0), 4)
    0.6821
    """
    if servers <= 0:
        return 1.0
    if offered_load <= 0:
        return 0.0
    if offered_load >= servers - _EPS:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    rho = offered_load / servers
    return b / (1 - rho + rho * b)


def erlang_c_service_level(
    servers: int, arrival_rate: float, handle_time_s: float, answer_within_s: float
) -> float:
    """Share of customers answered within ``answer_within_s`` under Erlang C.

    >>> round(erlang_c_service_level(11, 10 / 180, 180.0, 20.0), 4)
    0.3896
    """
    mu = 1.0 / handle_time_s
    load = arrival_rate * handle_time_s
    if servers <= 0 or load >= servers - _EPS:
        return 0.0 if load > 0 else 1.0
    c = erlang_c(servers, load)
    return 1.0 - c * math.exp(-(servers - load) * mu * answer_within_s)


def erlang_c_mean_wait(servers: int, arrival_rate: float, handle_time_s: float) -> float:
    """Mean wait in queue (ASA) under Erlang C; infinite when the queue is unstable."""
    mu = 1.0 / handle_time_s
    load = arrival_rate * handle_time_s
    if servers <= 0 or load >= servers - _EPS:
        return math.inf
    return erlang_c(servers, load) / (servers * mu - arrival_rate)


@dataclass(frozen=True, slots=True)
class ErlangA:
    """What Erlang A predicts for a queue: answered in time, abandoned, mean wait."""

    service_level: float  # answered within the threshold, among all arrivals
    abandon_rate: float  # share of arrivals that abandon
    mean_wait_s: float  # mean time in queue of all arrivals
    wait_probability: float  # share of arrivals that wait at all


def erlang_a(
    servers: int,
    arrival_rate: float,
    handle_time_s: float,
    patience_s: float,
    answer_within_s: float,
    *,
    short_abandon_s: float = 0.0,
) -> ErlangA:
    """M/M/N+M: the stationary birth-death chain, and per queue position the phase-type
    time to service versus the customer's own patience.

    ``short_abandon_s`` leaves out of the service level those who abandon sooner than that
    (they left before anyone could have helped; contact centres exclude them).
    """
    from scipy.linalg import expm  # here: a server without chat pacing never loads SciPy

    mu = 1.0 / handle_time_s
    theta = 1.0 / patience_s
    lam = arrival_rate
    if servers <= 0:
        return ErlangA(0.0, 1.0, patience_s, 1.0)
    size = servers + _MAX_QUEUE + 1
    # Unnormalised stationary probabilities, in logs to survive large loads.
    logp = np.empty(size)
    logp[0] = 0.0
    for n in range(1, size):
        death = min(n, servers) * mu + max(n - servers, 0) * theta
        logp[n] = logp[n - 1] + math.log(lam) - math.log(death) if lam > 0 else -math.inf
    logp -= logp.max()
    p = np.exp(logp)
    p /= p.sum()
    # PASTA: an arrival sees the stationary distribution. Arriving at n >= N it waits at
    # position k = n - N + 1; ahead of it, service completions (N·mu) and abandonments of
    # those ahead ((j-1)·theta at position j) move it forward; it abandons at rate theta.
    wait_probability = float(p[servers:].sum())
    answered_in_time = float(p[:servers].sum())
    abandoned = 0.0
    mean_wait = 0.0
    short = 0.0
    # Queue positions that carry probability: beyond them the chain is cut (the matrix
    # exponential below costs the cube of its size).
    tail = np.cumsum(p[::-1])[::-1]
    significant = np.nonzero(tail > 1e-12)[0]
    max_k = max(1, int(significant[-1]) + 1 - servers) if len(significant) else 1
    if wait_probability > 0:
        # Transient chain over positions 1..K with absorbing "served" and "abandoned".
        k_states = max_k
        q = np.zeros((k_states, k_states))
        for j in range(1, k_states + 1):
            forward = servers * mu + (j - 1) * theta
            i = j - 1
            if j > 1:  # from position 1 the forward move is into service (absorbing)
                q[i, i - 1] = forward
            q[i, i] = -(forward + theta)
        start = p[servers : servers + k_states]
        prob_t = start @ expm(q * answer_within_s)  # still waiting at t, by position
        still_waiting = float(prob_t.sum())
        # Served within t = started waiting - still waiting - abandoned before t.
        # Abandoned before t: integral of theta * P(waiting at s) ds over [0, t].
        abandoned_by_t = theta * _integral_waiting(start, q, answer_within_s)
        served_by_t = float(start.sum()) - still_waiting - abandoned_by_t
        answered_in_time += served_by_t
        # Eventual outcomes: absorption probabilities and expected time in the chain.
        inv = np.linalg.solve(-q.T, start)  # expected time spent in each position
        mean_wait = float(inv.sum())
        abandoned = float(theta * inv.sum())
        if short_abandon_s > 0:
            short = theta * _integral_waiting(start, q, short_abandon_s)
    denominator = 1.0 - short
    service_level = answered_in_time / denominator if denominator > 0 else 0.0
    return ErlangA(
        service_level=min(1.0, max(0.0, service_level)),
        abandon_rate=min(1.0, abandoned),
        mean_wait_s=mean_wait,
        wait_probability=wait_probability,
    )


def _integral_waiting(start: np.ndarray, q: np.ndarray, t: float) -> float:
    """∫₀ᵗ start·exp(Qs)·1 ds, through the augmented-matrix exponential (Van Loan)."""
    from scipy.linalg import expm

    n = q.shape[0]
    aug = np.zeros((n + 1, n + 1))
    aug[:n, :n] = q
    aug[:n, n] = 1.0
    e = expm(aug * t)
    return float(start @ e[:n, n])


@dataclass(frozen=True, slots=True)
class QueueOutlook:
    """What pacing knows of a queue right now (the live server or the simulator fills it)."""

    agents_available: int  # agents present and routable for the queue
    capacity_per_agent: int  # chats one agent may hold at once
    busy_slots: int  # chats in progress
    waiting: int  # chats in the queue now
    arrival_rate: float  # chats per second arriving by other routes (recent measure)
    handle_time_s: float  # recent mean handle time
    patience_s: float  # recent mean patience of waiting visitors
    pending_offers: int  # offers shown and not yet answered
    acceptance_rate: float  # share of offers accepted (recent)
    offer_lifetime_s: float = (
        OFFER_LIFETIME_MS / 1000
    )  # an offer is answered (or expires) within this


@dataclass(frozen=True, slots=True)
class PacingTarget:
    service_level: float = 0.8  # share answered ...
    answer_within_s: float = 20.0  # ... within this many seconds
    short_abandon_s: float = 5.0


@dataclass(frozen=True, slots=True)
class PacingDecision:
    offer: bool
    predicted_service_level: float
    predicted_wait_s: float
    reason: str


def decide(outlook: QueueOutlook, target: PacingTarget) -> PacingDecision:
    """Whether one more chat offer may be made now, and why.

    The offer's load counts as if accepted with the recent acceptance rate, together with
    the offers still pending; the chats already waiting are load that arrives now.
    """
    servers = outlook.agents_available * outlook.capacity_per_agent
    if servers <= 0:
        return PacingDecision(False, 0.0, math.inf, "no agents available")
    horizon = max(outlook.offer_lifetime_s, outlook.handle_time_s)
    extra = (outlook.pending_offers + 1) * outlook.acceptance_rate + outlook.waiting
    rate = outlook.arrival_rate + extra / horizon
    prediction = erlang_a(
        servers,
        rate,
        outlook.handle_time_s,
        outlook.patience_s,
        target.answer_within_s,
        short_abandon_s=target.short_abandon_s,
    )
    free = servers - outlook.busy_slots - outlook.waiting
    if prediction.service_level >= target.service_level:
        return PacingDecision(
            True,
            prediction.service_level,
            prediction.mean_wait_s,
            f"predicted {prediction.service_level:.0%} answered within "
            f"{target.answer_within_s:.0f} s; {max(free, 0)} slot(s) free",
        )
    return PacingDecision(
        False,
        prediction.service_level,
        prediction.mean_wait_s,
        f"service-level throttle: predicted {prediction.service_level:.0%} "
        f"< target {target.service_level:.0%}",
    )


def expected_wait_s(outlook: QueueOutlook, position: int) -> float | None:
    """The expected wait of the chat at ``position`` in the queue (1 = next), or ``None``
    when no agent is present to answer it.

    With every slot busy, slots free up at ``servers / handle_time`` per second (the pacing
    model's exponential handle times), so the chat waits for as many ends as there are
    chats ahead of it plus one, beyond the slots free now.

    >>> o = QueueOutlook(agents_available=2, capacity_per_agent=2, busy_slots=4, waiting=3,
    ...                  arrival_rate=0.0, handle_time_s=240.0, patience_s=120.0,
    ...                  pending_offers=0, acceptance_rate=0.3)
    >>> expected_wait_s(o, 1), expected_wait_s(o, 3)
    (60.0, 180.0)
    >>> from dataclasses import replace
    >>> expected_wait_s(replace(o, busy_slots=2), 1)
    0.0
    """
    servers = outlook.agents_available * outlook.capacity_per_agent
    if servers <= 0:
        return None
    ahead = position - max(servers - outlook.busy_slots, 0)
    return 0.0 if ahead <= 0 else ahead * outlook.handle_time_s / servers
