"""Pacing: queueing formulas against known values and a simulation, and the decision."""

from __future__ import annotations

import heapq
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opportune.core.pacing import (
    PacingTarget,
    QueueOutlook,
    decide,
    erlang_a,
    erlang_c,
    erlang_c_mean_wait,
    erlang_c_service_level,
)


@pytest.mark.parametrize(
    ("servers", "load", "expected"),
    [
        # Values from the Erlang C tables (e.g. Cooper, Introduction to Queueing Theory).
        (1, 0.5, 0.5),  # M/M/1: P(wait) = rho
        (2, 1.0, 1 / 3),  # M/M/2 at rho = 0.5
        (11, 10.0, 0.6821),
        (5, 3.0, 0.2362),
    ],
)
def test_erlang_c_known_values(servers: int, load: float, expected: float) -> None:
    assert erlang_c(servers, load) == pytest.approx(expected, abs=5e-5)


def erlang_c_by_definition(n: int, a: float) -> float:
    """The textbook formula, summed directly (fine for small n)."""
    top = a**n / math.factorial(n) * n / (n - a)
    return top / (sum(a**k / math.factorial(k) for k in range(n)) + top)


@given(n=st.integers(1, 60), rho=st.floats(0.01, 0.99))
def test_erlang_c_recursion_equals_the_formula(n: int, rho: float) -> None:
    assert erlang_c(n, n * rho) == pytest.approx(erlang_c_by_definition(n, n * rho), rel=1e-9)


def test_erlang_c_service_level_and_wait_known_case() -> None:
    # The classic staffing example: 10 Erlangs, AHT 180 s, 11 agents, 20 s threshold.
    lam = 10 / 180
    assert erlang_c_service_level(11, lam, 180, 20) == pytest.approx(0.3896, abs=1e-4)
    assert erlang_c_mean_wait(11, lam, 180) == pytest.approx(0.6821 * 180 / 1, rel=1e-3)
    assert erlang_c_service_level(10, lam, 180, 20) == 0.0  # unstable: nobody in time
    assert math.isinf(erlang_c_mean_wait(10, lam, 180))


@pytest.mark.parametrize(("servers", "load"), [(11, 10.0), (5, 3.0), (20, 18.0)])
def test_erlang_a_with_endless_patience_is_erlang_c(servers: int, load: float) -> None:
    lam = load / 180
    a = erlang_a(servers, lam, 180, 1e12, 20)
    assert a.service_level == pytest.approx(erlang_c_service_level(servers, lam, 180, 20), abs=1e-6)
    assert a.wait_probability == pytest.approx(erlang_c(servers, load), abs=1e-6)
    assert a.mean_wait_s == pytest.approx(erlang_c_mean_wait(servers, lam, 180), rel=1e-4)


def simulate_mmnm(
    servers: int, lam: float, aht: float, patience: float, t: float, n: int, seed: int
) -> tuple[float, float]:
    """A plain discrete-event simulation of M/M/N+M (FCFS): share answered within t, share
    abandoned."""
    rng = random.Random(seed)
    free_at = [0.0] * servers  # when each server next becomes free
    heapq.heapify(free_at)
    clock = 0.0
    in_time = abandoned = 0
    for _ in range(n):
        clock += rng.expovariate(lam)
        gives_up = clock + rng.expovariate(1 / patience)
        start = max(clock, free_at[0])
        if start > gives_up:
            abandoned += 1
            continue
        heapq.heapreplace(free_at, start + rng.expovariate(1 / aht))
        in_time += start - clock <= t
    return in_time / n, abandoned / n


def test_erlang_a_matches_a_simulation_of_an_overloaded_queue() -> None:
    servers, lam, aht, patience, t = 10, 12 / 180, 180.0, 60.0, 20.0
    a = erlang_a(servers, lam, aht, patience, t)
    sl, ab = simulate_mmnm(servers, lam, aht, patience, t, 150_000, seed=7)
    # Standard errors at n = 150,000 are ~0.0013: three of them either side.
    assert a.service_level == pytest.approx(sl, abs=0.006)
    assert a.abandon_rate == pytest.approx(ab, abs=0.006)


@settings(max_examples=40, deadline=None)
@given(servers=st.integers(1, 30), load=st.floats(0.1, 40), patience=st.floats(10, 600))
def test_more_agents_never_lower_the_service_level(
    servers: int, load: float, patience: float
) -> None:
    lam = load / 180
    fewer = erlang_a(servers, lam, 180, patience, 20).service_level
    more = erlang_a(servers + 1, lam, 180, patience, 20).service_level
    assert more >= fewer - 1e-9
    assert 0.0 <= fewer <= 1.0


def outlook(**kw: float) -> QueueOutlook:
    base = dict(
        agents_available=4,
        capacity_per_agent=2,
        busy_slots=2,
        waiting=0,
        arrival_rate=0.5 / 60,
        handle_time_s=300.0,
        patience_s=90.0,
        pending_offers=0,
        acceptance_rate=0.3,
    )
    return QueueOutlook(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "offer", "reason"),
    [
        ({}, True, "answered within"),
        ({"agents_available": 0}, False, "no agents available"),
        (
            {"arrival_rate": 1.6 / 60, "waiting": 6, "busy_slots": 8},
            False,
            "service-level throttle",
        ),
        ({"pending_offers": 200, "acceptance_rate": 0.9}, False, "service-level throttle"),
    ],
)
def test_decide_offers_only_while_the_target_holds(
    kw: dict[str, float], offer: bool, reason: str
) -> None:
    d = decide(outlook(**kw), PacingTarget())
    assert d.offer is offer
    assert reason in d.reason
