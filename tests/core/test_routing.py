"""Routing: eligibility rules, the standard strategies (one contract suite), waiting order,
predictive greedy (gate, hold, timeout), joint assignment, dry run, exploration and
propensities, service-level helpers — with property tests of the invariants."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from opportune.core.assignment import route_predictive_assignment
from opportune.core.predictive import Posterior, hold_call, route_predictive_greedy
from opportune.core.routing import (
    STRATEGIES,
    Agent,
    Interaction,
    PredictiveSettings,
    Queue,
    Ring,
    Routing,
    SkillRequirement,
    abandonment_rate,
    apply,
    average_speed_of_answer,
    eligible,
    qualifies,
    release,
    route_standard,
    service_level,
    waiting_order,
    wake_times,
)

NOW = 1_000_000_000
SALES = SkillRequirement("sales", 3)


def agent(aid: str, **kw: object) -> Agent:
    base: dict[str, object] = dict(
        id=aid,
        skills={"sales": 4},
        languages=frozenset({"en"}),
        presence="available",
        capacity={"chat": 1},
        load={"chat": 0},
        idle_since_ms=NOW - 60_000,
        last_assigned_ms=NOW - 120_000,
    )
    return Agent(**{**base, **kw})  # type: ignore[arg-type]


def chat(iid: str, wait_s: float = 0.0, **kw: object) -> Interaction:
    base: dict[str, object] = dict(
        id=iid, queue="q", medium="chat", arrived_at_ms=NOW - round(wait_s * 1000)
    )
    return Interaction(**{**base, **kw})  # type: ignore[arg-type]


def queue(**kw: object) -> Queue:
    return Queue(**{"name": "q", "skills": (SALES,), "language": "en", **kw})  # type: ignore[arg-type]


def predictive(rings: tuple[Ring, ...] = (), **kw: object) -> Queue:
    return queue(rings=rings, predictive=PredictiveSettings(**{"enabled": True, **kw}))  # type: ignore[arg-type]


def pairs(r: Routing) -> dict[str, str]:
    return {d.interaction_id: d.agent_id for d in r.decisions}


# ---- eligibility ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "i", "ok", "why"),
    [
        (agent("a"), chat("i"), True, "qualified and free"),
        (agent("a", presence="busy"), chat("i"), False, "busy is not routable"),
        (agent("a", presence="away"), chat("i"), False, "away"),
        (agent("a", presence="offline"), chat("i"), False, "offline"),
        (agent("a", load={"chat": 1}), chat("i"), False, "at capacity"),
        (agent("a", capacity={"chat": 3}, load={"chat": 2}), chat("i"), True, "a slot left"),
        (agent("a"), chat("i", medium="voice"), False, "queue takes chat only"),
        (agent("a", skills={"sales": 2}), chat("i"), False, "proficiency below 3"),
        (agent("a", skills={}), chat("i"), False, "no skill"),
        (agent("a"), chat("i", language="es"), False, "does not speak es"),
        (agent("a", languages=frozenset({"en", "es"})), chat("i", language="es"), True, "es"),
        (agent("a", queues=frozenset({"other"})), chat("i"), False, "not a member"),
        (agent("a", queues=frozenset({"q"})), chat("i"), True, "a member"),
    ],
)
def test_eligibility(a: Agent, i: Interaction, ok: bool, why: str) -> None:
    assert eligible(a, i, queue(), NOW) is ok, why


def test_bullseye_rings_relax_with_the_wait() -> None:
    q = queue(
        rings=(
            Ring(30, (SkillRequirement("sales", 2),)),  # lower the proficiency
            Ring(60, (SkillRequirement("sales", 2),), require_language=False),  # any language
            Ring(90, (), require_language=False),  # drop the skill too (each ring is whole)
        )
    )
    junior = agent("j", skills={"sales": 2})
    novice_en = agent("n", skills={})
    es = {"language": "es"}
    assert not eligible(junior, chat("i", 29), q, NOW)
    assert eligible(junior, chat("i", 30), q, NOW)
    assert not eligible(junior, chat("i", 59, **es), q, NOW)
    assert eligible(junior, chat("i", 60, **es), q, NOW)
    assert not eligible(novice_en, chat("i", 89), q, NOW)
    assert eligible(novice_en, chat("i", 90, **es), q, NOW)
    assert wake_times(chat("i"), q) == (NOW + 30_000, NOW + 60_000, NOW + 90_000)
    with pytest.raises(ValueError, match="rings must be in order"):
        queue(rings=(Ring(60, ()), Ring(30, ())))


def test_agent_state_assign_and_release() -> None:
    a = agent("a", capacity={"chat": 2})
    b = apply([a], Routing(()), {}, NOW)[0]
    assert b == a
    i = chat("i")
    routed = route_standard([i], [a], {"q": queue()}, NOW)
    (after,) = apply([a], routed, {"i": i}, NOW)
    assert after.load["chat"] == 1 and after.last_assigned_ms == NOW
    freed = release(after, "chat", NOW + 5000)
    assert freed.load["chat"] == 0 and freed.idle_since_ms == NOW + 5000


# ---- strategies: one contract suite -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_strategy_picks_one_candidate_deterministically(
    name: str, data: st.DataObject
) -> None:
    n = data.draw(st.integers(1, 8))
    candidates = [
        agent(
            f"a{k}",
            skills={"sales": data.draw(st.integers(3, 5))},
            capacity={"chat": 2},
            load={"chat": data.draw(st.integers(0, 1))},
            idle_since_ms=data.draw(st.integers(0, NOW)),
            last_assigned_ms=data.draw(st.integers(0, NOW)),
        )
        for k in range(n)
    ]
    pick = STRATEGIES[name](candidates, chat("i"), queue())  # type: ignore[index]
    assert pick in candidates
    assert STRATEGIES[name](list(reversed(candidates)), chat("i"), queue()) == pick  # type: ignore[index]


LOADED = dict(capacity={"chat": 4}, load={"chat": 1})


@pytest.mark.parametrize(
    ("name", "candidates", "expected"),
    [
        (
            "longest_idle",
            [
                agent("busy", idle_since_ms=0, **LOADED),
                agent("idle", idle_since_ms=NOW - 9000),
                agent("recent", idle_since_ms=NOW - 10),
            ],
            "idle",
        ),
        (
            "round_robin",
            [agent("rr", last_assigned_ms=5, **LOADED), agent("b", last_assigned_ms=NOW)],
            "rr",
        ),
        (
            "least_occupied",
            [
                agent("half", capacity={"chat": 2}, load={"chat": 1}, idle_since_ms=0),
                agent("quarter", **LOADED),
            ],
            "quarter",
        ),
        ("best_skill", [agent("pro", skills={"sales": 5}, **LOADED), agent("b")], "pro"),
    ],
)
def test_each_strategy_prefers_its_agent(name: str, candidates: list[Agent], expected: str) -> None:
    assert STRATEGIES[name](candidates, chat("i"), queue()).id == expected  # type: ignore[index]


# ---- waiting order ----------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(-2, 2), st.integers(0, 10_000)), min_size=1, max_size=12))
def test_waiting_order_is_priority_then_age(specs: list[tuple[int, int]]) -> None:
    waiting = [
        chat(f"i{k}", priority=p, arrived_at_ms=NOW - age) for k, (p, age) in enumerate(specs)
    ]
    order = waiting_order(waiting, {"q": queue(priority=1)})
    keys = [(-i.priority, i.arrived_at_ms) for i in order]
    assert keys == sorted(keys)


# ---- property tests over random centres -------------------------------------------------


@st.composite
def centres(draw: st.DrawFn) -> tuple[list[Agent], list[Interaction], dict[str, dict[str, float]]]:
    n_agents = draw(st.integers(1, 9))
    agents = [
        agent(
            f"a{k}",
            presence=draw(st.sampled_from(["available", "available", "busy", "away", "offline"])),
            skills={"sales": draw(st.integers(1, 5))},
            languages=frozenset(draw(st.sampled_from([{"en"}, {"en", "es"}, {"es"}]))),
            capacity={"chat": (cap := draw(st.integers(1, 3)))},
            load={"chat": draw(st.integers(0, cap))},
            idle_since_ms=draw(st.integers(0, NOW)),
            last_assigned_ms=draw(st.integers(0, NOW)),
        )
        for k in range(n_agents)
    ]
    waiting = [
        chat(
            f"i{k}",
            draw(st.floats(0, 100)),
            language=draw(st.sampled_from([None, "en", "es"])),
            priority=draw(st.integers(0, 2)),
        )
        for k in range(draw(st.integers(1, 10)))
    ]
    scores = {i.id: {a.id: draw(st.floats(0, 1)) for a in agents} for i in waiting}
    return agents, waiting, scores


RINGED = dict(rings=(Ring(40, (SkillRequirement("sales", 2),)), Ring(80, (), False)))


def check_invariants(
    routing: Routing, agents: Sequence[Agent], waiting: Sequence[Interaction], q: Queue
) -> None:
    """Never an ineligible, non-available or over-capacity agent; each interaction once."""
    by_id = {a.id: a for a in agents}
    ids = [d.interaction_id for d in routing.decisions]
    assert len(ids) == len(set(ids))
    interactions = {i.id: i for i in waiting}
    for d in routing.decisions:
        a = by_id[d.agent_id]
        assert a.presence == "available"
        assert qualifies(a, interactions[d.interaction_id], q, NOW)
        assert 0 < d.propensity <= 1
    for after in apply(agents, routing, interactions, NOW):
        assert after.load["chat"] <= after.capacity["chat"]
    held = {h.interaction_id for h in routing.held}
    assert not held & set(ids)


ROUTERS = ["standard", "greedy", "assignment"]


def run(
    kind: str,
    agents: Sequence[Agent],
    waiting: Sequence[Interaction],
    q: Queue,
    scores: Mapping[str, Mapping[str, float]],
    **kw: object,
) -> Routing:
    if kind == "standard":
        return route_standard(waiting, agents, {"q": q}, NOW)
    route = route_predictive_greedy if kind == "greedy" else route_predictive_assignment
    return route(waiting, agents, {"q": q}, NOW, scores, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ROUTERS)
@settings(max_examples=60, deadline=None)
@given(centre=centres(), hold=st.booleans(), min_free=st.integers(1, 5))
def test_routing_invariants(kind: str, centre, hold: bool, min_free: int) -> None:  # type: ignore[no-untyped-def]
    agents, waiting, scores = centre
    q = predictive(hold_for_better=hold, min_free_agents=min_free, **RINGED)
    check_invariants(run(kind, agents, waiting, q, scores), agents, waiting, q)


@pytest.mark.parametrize("kind", ROUTERS)
@settings(max_examples=50, deadline=None)
@given(centre=centres())
def test_no_interaction_waits_while_an_eligible_agent_is_free(kind: str, centre) -> None:  # type: ignore[no-untyped-def]
    """Work conservation (without holds): after routing, no waiting interaction has a free
    eligible agent."""
    agents, waiting, scores = centre
    q = predictive(hold_for_better=False, min_free_agents=1, window_factor=100, **RINGED)
    routing = run(kind, agents, waiting, q, scores)
    after = apply(agents, routing, {i.id: i for i in waiting}, NOW)
    done = set(pairs(routing))
    for i in waiting:
        if i.id not in done:
            assert not any(eligible(a, i, q, NOW) for a in after)


@settings(max_examples=50, deadline=None)
@given(centre=centres())
def test_standard_serves_in_waiting_order_when_everyone_qualifies(centre) -> None:  # type: ignore[no-untyped-def]
    agents, waiting, _ = centre
    waiting = [replace(i, language=None) for i in waiting]
    q = Queue("q", media=frozenset({"chat"}))  # no skills, no language: all qualify
    routing = route_standard(waiting, agents, {"q": q}, NOW)
    slots = sum(a.capacity["chat"] - a.load["chat"] for a in agents if a.presence == "available")
    first = [i.id for i in waiting_order(waiting, {"q": q})[:slots]]
    assert sorted(pairs(routing)) == sorted(first)


@pytest.mark.parametrize("kind", ["greedy", "assignment"])
@settings(max_examples=50, deadline=None)
@given(centre=centres())
def test_dry_run_never_changes_the_standard_choice(kind: str, centre) -> None:  # type: ignore[no-untyped-def]
    agents, waiting, scores = centre
    q = predictive(dry_run=True, **RINGED)
    standard = route_standard(waiting, agents, {"q": q}, NOW)
    dry = run(kind, agents, waiting, q, scores)
    assert pairs(dry) == pairs(standard)
    assert all(d.method == "dry_run" for d in dry.decisions)
    if kind == "greedy":  # the joint assignment may have left it waiting (None)
        assert all(d.would_choose is not None for d in dry.decisions)


@pytest.mark.parametrize("kind", ["greedy", "assignment"])
@settings(max_examples=50, deadline=None)
@given(centre=centres())
def test_fallback_to_standard_after_the_hold_timeout(kind: str, centre) -> None:  # type: ignore[no-untyped-def]
    agents, waiting, scores = centre
    q = predictive(hold_timeout_s=12, min_free_agents=1)
    old = [replace(i, arrived_at_ms=NOW - 12_000 - k) for k, i in enumerate(waiting)]
    held_since = {i.id: NOW - 12_000 for i in old}  # assignment counts from being passed over
    routing = run(kind, agents, old, q, scores, held_since=held_since)
    assert pairs(routing) == pairs(route_standard(old, agents, {"q": q}, NOW))
    assert all(d.method == "fallback" for d in routing.decisions)
    assert not routing.held


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_assignment_total_is_at_least_greedys_on_the_same_scores(data: st.DataObject) -> None:
    n_agents, n_waiting = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 8))
    agents = [
        agent(
            f"a{k}",
            capacity={"chat": (c := data.draw(st.integers(1, 3)))},
            load={"chat": data.draw(st.integers(0, c))},
        )
        for k in range(n_agents)
    ]
    skilled = data.draw(st.booleans())  # with gaps in eligibility, or everyone qualifies
    if skilled:
        agents = [replace(a, skills={"sales": data.draw(st.integers(2, 4))}) for a in agents]
    waiting = [chat(f"i{k}", k) for k in range(n_waiting)]
    scores = {i.id: {a.id: data.draw(st.floats(0, 1)) for a in agents} for i in waiting}
    q = predictive(hold_for_better=False, min_free_agents=1, window_factor=100)
    greedy = run("greedy", agents, waiting, q, scores)
    joint = run("assignment", agents, waiting, q, scores)

    def total(r: Routing) -> float:
        return sum(scores[d.interaction_id][d.agent_id] for d in r.decisions)

    assert len(joint.decisions) >= len(greedy.decisions)
    if len(joint.decisions) == len(greedy.decisions):
        assert total(joint) >= total(greedy) - 1e-9


# ---- predictive greedy in detail -------------------------------------------------------


def team(n: int, busy: Sequence[int] = ()) -> list[Agent]:
    return [
        agent(f"a{k}", load={"chat": 1 if k in busy else 0}, idle_since_ms=NOW - 1000 * (k + 1))
        for k in range(n)
    ]


def ranked(n: int) -> dict[str, float]:
    """a0 is the best, a1 next, ..."""
    return {f"a{k}": 0.5 - 0.01 * k for k in range(n)}


def test_greedy_takes_the_best_free_agent_with_evidence() -> None:
    r = route_predictive_greedy([chat("i")], team(6), {"q": predictive()}, NOW, {"i": ranked(6)})
    (d,) = r.decisions
    assert (d.agent_id, d.method, d.propensity) == ("a0", "predictive", 1.0)
    assert [a for a, _ in d.scores] == [f"a{k}" for k in range(6)]
    assert "highest predicted" in d.why and "among 6 free" in d.why


def test_greedy_skips_scoring_with_three_or_fewer_free_agents() -> None:
    agents = team(6, busy=(0, 1, 2))  # 3 free: a3, a4, a5; longest idle is a5
    r = route_predictive_greedy([chat("i")], agents, {"q": predictive()}, NOW, {"i": ranked(6)})
    (d,) = r.decisions
    assert (d.agent_id, d.method) == ("a5", "standard")
    assert "3 free agent(s) < 4" in d.why
    r4 = route_predictive_greedy(
        [chat("i")],
        agents,
        {"q": predictive(min_free_agents=3, hold_for_better=False)},
        NOW,
        {"i": ranked(6)},
    )
    assert r4.decisions[0].agent_id == "a3"


def test_greedy_holds_for_a_busy_better_agent_then_widens_then_falls_back() -> None:
    """The anchor's hold rule (kept as ``hold_rule="anchor"``)."""
    agents = team(10, busy=(0, 1))  # the two best are busy; a2 ranks 3rd of 10
    q = {"q": predictive(hold_timeout_s=12, hold_rule="anchor")}
    scores = {"i": ranked(10)}
    r = route_predictive_greedy([chat("i", 0)], agents, q, NOW, scores)
    assert not r.decisions
    (h,) = r.held
    # Acceptable once 10 * wait / 12 > 2, i.e. after 2.4 s.
    assert h.recheck_at_ms == NOW + 2401 and h.since_ms == NOW
    later = route_predictive_greedy(
        [chat("i", 2.0)], agents, q, NOW, scores, held_since={"i": NOW - 2000}
    )
    assert later.held and later.held[0].since_ms == NOW - 2000
    ok = route_predictive_greedy([chat("i", 2.401)], agents, q, NOW, scores)
    assert pairs(ok) == {"i": "a2"} and ok.decisions[0].method == "predictive"
    late = route_predictive_greedy([chat("i", 12)], agents, q, NOW, scores)
    assert late.decisions[0].method == "fallback"
    assert late.decisions[0].agent_id == "a9"  # longest idle
    assert "hold timeout" in late.decisions[0].why


HOLD = PredictiveSettings(enabled=True, mean_handle_s=240, patience_s=150, wait_cost_per_s=0.002)


@pytest.mark.parametrize(
    ("gain", "better_busy", "waited_s", "free", "rate", "held", "why"),
    [
        # 30 better agents busy: one frees in 8 s on average, 92% within the 20 s target.
        (0.10, 30, 0.0, 5, 0.0, True, "holding"),
        # The same wait costs more than a small gain: abandon risk 5.3% of 0.15 + 0.016.
        (0.02, 30, 0.0, 5, 0.0, False, "wait cost"),
        # Three better agents: one frees within 20 s with 22% chance, below the 80% target.
        (0.30, 3, 0.0, 5, 0.0, False, "target"),
        # Waited 15 s already: 5 s left of the target, 46% chance with 30 busy.
        (0.10, 30, 15.0, 5, 0.0, False, "target"),
        # 1 call a second: 8 arrivals in the 8 s wait would take the 5 free agents.
        (0.10, 30, 0.0, 5, 1.0, False, "arrivals"),
        (0.00, 30, 0.0, 5, 0.0, False, "no better agent"),
    ],
)
def test_the_hold_weighs_the_gain_against_the_wait_and_the_target(
    gain: float,
    better_busy: int,
    waited_s: float,
    free: int,
    rate: float,
    held: bool,
    why: str,
) -> None:
    call = hold_call(
        gain=gain,
        best_free=0.15,
        waited_s=waited_s,
        better_busy=better_busy,
        free=free,
        settings=replace(HOLD, arrival_rate_per_s=rate),
    )
    assert call.hold is held and why in call.why
    if gain > 0:
        assert call.expected_wait_s == pytest.approx(240 / better_busy)


def test_the_hold_releases_once_the_wait_costs_more_than_the_gain() -> None:
    """The same gain, fewer better agents busy: the longer expected wait flips it."""
    calls = [
        hold_call(
            gain=0.08,
            best_free=0.15,
            waited_s=0,
            better_busy=k,
            free=10,
            settings=replace(HOLD, service_level=0.0),
        )
        for k in (40, 20, 10, 5)
    ]
    # 6 s: gain 0.077 against 0.018; 12 s: 0.074 against 0.036; 24 s: 0.067 against 0.072.
    assert [c.hold for c in calls] == [True, True, False, False]
    assert all(a.expected_wait_s < b.expected_wait_s for a, b in pairwise(calls))


def test_a_held_interaction_takes_the_better_agent_as_soon_as_it_frees() -> None:
    """The wait-cost hold: held while 30 better agents are busy; the next pass — run on the
    agent state change, not on a timer — gives it the first better agent who frees."""
    agents = team(40, busy=tuple(range(30)))
    q = {"q": predictive(mean_handle_s=240, patience_s=150)}
    scores = {"i": {f"a{k}": (0.5 if k < 30 else 0.2) for k in range(40)}}
    r = route_predictive_greedy([chat("i", 0)], agents, q, NOW, scores)
    (h,) = r.held
    assert not r.decisions and "holding" in h.why
    # The target binds again when one better agent freeing in time is under 80% likely.
    assert NOW < h.recheck_at_ms < NOW + 20_000
    freed = [release(a, "chat", NOW + 3000) if a.id == "a7" else a for a in agents]
    later = route_predictive_greedy(
        [chat("i", 3.0)], freed, q, NOW + 0, scores, held_since={"i": h.since_ms}
    )
    assert pairs(later) == {"i": "a7"}


def test_minimised_kpis_reverse_the_ranking() -> None:
    q = {"q": predictive(direction="minimize", kpi_name="handle time")}
    r = route_predictive_greedy([chat("i")], team(5), q, NOW, {"i": ranked(5)})
    assert r.decisions[0].agent_id == "a4"
    assert "lowest predicted handle time" in r.decisions[0].why


def test_missing_scores_fall_back_to_standard() -> None:
    scores = {"i": {"a0": 0.9}}
    for route in (route_predictive_greedy, route_predictive_assignment):
        r = route([chat("i")], team(5), {"q": predictive()}, NOW, scores)
        assert r.decisions[0].method == "fallback" and "not scored" in r.decisions[0].why


def test_workload_balancing_among_near_ties() -> None:
    agents = team(5)  # a4 idle longest
    scores = {"i": {"a0": 0.50, "a1": 0.495, "a2": 0.49, "a3": 0.3, "a4": 0.492}}
    exact = route_predictive_greedy([chat("i")], agents, {"q": predictive()}, NOW, scores)
    near = route_predictive_greedy(
        [chat("i")], agents, {"q": predictive(balance_margin=0.01)}, NOW, scores
    )
    assert pairs(exact) == {"i": "a0"} and pairs(near) == {"i": "a4"}


def test_greedy_and_standard_leave_non_predictive_queues_alone() -> None:
    r = route_predictive_greedy([chat("i")], team(6), {"q": queue()}, NOW, {"i": ranked(6)})
    assert r.decisions[0].method == "standard" and r.decisions[0].agent_id == "a5"


# ---- joint assignment in detail ---------------------------------------------------------


def test_assignment_beats_greedy_when_two_customers_want_the_same_agent() -> None:
    agents = team(4)
    scores = {
        "i1": {"a0": 0.9, "a1": 0.8, "a2": 0.1, "a3": 0.1},
        "i2": {"a0": 0.85, "a1": 0.2, "a2": 0.1, "a3": 0.1},
    }
    waiting = [chat("i1", 5), chat("i2", 1)]
    q = {"q": predictive(min_free_agents=1, hold_for_better=False)}
    greedy = route_predictive_greedy(waiting, agents, q, NOW, scores)
    joint = route_predictive_assignment(waiting, agents, q, NOW, scores)
    assert pairs(greedy) == {"i1": "a0", "i2": "a1"}  # 0.9 + 0.2
    assert pairs(joint) == {"i1": "a1", "i2": "a0"}  # 0.8 + 0.85
    assert "joint assignment of 2 waiting" in joint.decisions[0].why


def test_an_agent_with_capacity_c_takes_up_to_c_at_once() -> None:
    agents = [agent("star", capacity={"chat": 3}), agent("b"), agent("c")]
    waiting = [chat(f"i{k}", k) for k in range(3)]
    scores = {i.id: {"star": 0.9, "b": 0.1, "c": 0.1} for i in waiting}
    r = route_predictive_assignment(waiting, agents, {"q": predictive()}, NOW, scores)
    assert sorted(pairs(r).values()) == ["star"] * 3


def test_a_freed_agent_takes_the_waiting_customer_it_suits_best() -> None:
    agents = team(3, busy=(1, 2))  # one agent free, three customers waiting
    waiting = [chat("old", 9), chat("mid", 5), chat("new", 1)]
    scores = {"old": ranked(3), "mid": ranked(3), "new": {"a0": 0.9, "a1": 0.1, "a2": 0.1}}
    r = route_predictive_assignment(waiting, agents, {"q": predictive()}, NOW, scores)
    assert pairs(r) == {"new": "a0"}
    assert {h.interaction_id for h in r.held} == {"old", "mid"}
    assert all(h.recheck_at_ms == NOW + 12_000 for h in r.held)
    # Passed over for the hold timeout: standard routing serves the oldest first.
    r2 = route_predictive_assignment(
        waiting, agents, {"q": predictive()}, NOW, scores, held_since={"old": NOW - 12_000}
    )
    assert pairs(r2) == {"old": "a0"} and r2.decisions[0].method == "fallback"


def test_the_window_bounds_how_far_a_choice_overtakes_the_queue() -> None:
    agents = team(1)
    waiting = [chat(f"i{k}", 100 - k) for k in range(10)]
    scores = {i.id: {"a0": 0.1} for i in waiting} | {"i9": {"a0": 0.99}}
    narrow = route_predictive_assignment(
        waiting, agents, {"q": predictive(window_factor=2)}, NOW, scores
    )
    wide = route_predictive_assignment(
        waiting, agents, {"q": predictive(window_factor=10)}, NOW, scores
    )
    assert list(pairs(narrow)) == ["i0"] and list(pairs(wide)) == ["i9"]


# ---- exploration and propensities --------------------------------------------------------


def test_epsilon_greedy_propensity_is_the_closed_form_and_matches_frequencies() -> None:
    q = {"q": predictive(exploration="epsilon_greedy", epsilon=0.3, hold_for_better=False)}
    rng = random.Random(4)
    counts: dict[str, int] = {}
    props: dict[str, float] = {}
    for _ in range(4000):
        (d,) = route_predictive_greedy(
            [chat("i")], team(5), q, NOW, {"i": ranked(5)}, rng=rng
        ).decisions
        counts[d.agent_id] = counts.get(d.agent_id, 0) + 1
        props[d.agent_id] = d.propensity
    assert props["a0"] == pytest.approx(0.7 + 0.3 / 5)
    assert props["a3"] == pytest.approx(0.3 / 5)
    for a, n in counts.items():
        assert n / 4000 == pytest.approx(props[a], abs=0.025)


def test_thompson_propensity_is_estimated_by_resampling() -> None:
    # Two free agents 0.02 apart, posterior sds 0.03 and 0.04: P(a1 wins) = Φ(-0.02 / 0.05).
    agents = [agent("a0"), agent("a1")]
    q = {"q": predictive(exploration="thompson", min_free_agents=1, propensity_draws=1000)}
    posteriors = {"a0": Posterior("normal", 0.0, 0.03), "a1": Posterior("normal", 0.0, 0.04)}
    scores = {"i": {"a0": 0.52, "a1": 0.50}}
    truth = {"a1": float(norm.cdf(-0.02 / 0.05)), "a0": 1 - float(norm.cdf(-0.02 / 0.05))}
    rng = random.Random(1)
    seen: dict[str, int] = {}
    for _ in range(120):
        (d,) = route_predictive_greedy(
            [chat("i")], agents, q, NOW, scores, posteriors=posteriors, rng=rng
        ).decisions
        assert d.propensity == pytest.approx(truth[d.agent_id], abs=0.05)  # ±3.3 se at 1000
        seen[d.agent_id] = seen.get(d.agent_id, 0) + 1
    assert seen["a1"] / 120 == pytest.approx(truth["a1"], abs=0.13)  # ±3 se at 120
    with pytest.raises(ValueError, match="rng"):
        route_predictive_greedy([chat("i")], agents, q, NOW, scores, posteriors=posteriors)


def test_beta_posteriors_explore_agents_with_little_history() -> None:
    agents = [agent("veteran"), agent("newcomer")]
    q = {"q": predictive(exploration="thompson", min_free_agents=1, propensity_draws=300)}
    posteriors = {"veteran": Posterior("beta", 400, 600), "newcomer": Posterior("beta", 2, 3)}
    scores = {"i": {"veteran": 0.42, "newcomer": 0.40}}
    rng = random.Random(2)
    chosen = [
        route_predictive_greedy([chat("i")], agents, q, NOW, scores, posteriors=posteriors, rng=rng)
        .decisions[0]
        .agent_id
        for _ in range(200)
    ]
    assert 0.3 < chosen.count("newcomer") / 200 < 0.6  # uncertain: explored often


def test_assignment_exploration_gives_resampled_propensities() -> None:
    agents = team(3)
    waiting = [chat("i1", 2), chat("i2", 1)]
    scores = {"i1": ranked(3), "i2": ranked(3)}
    posteriors = {a.id: Posterior("normal", 0.0, 0.02) for a in agents}
    q = {"q": predictive(exploration="thompson", propensity_draws=400)}
    r = route_predictive_assignment(
        waiting, agents, q, NOW, scores, posteriors=posteriors, rng=random.Random(3)
    )
    assert len(r.decisions) == 2
    assert all(0 < d.propensity < 1 for d in r.decisions)
    deterministic = route_predictive_assignment(waiting, agents, {"q": predictive()}, NOW, scores)
    assert all(d.propensity == 1.0 for d in deterministic.decisions)


# ---- service level ----------------------------------------------------------------------


def test_service_level_and_abandonment_by_hand() -> None:
    answered = [0, 5, 19, 20, 21, 60]
    abandoned = [2, 30, 90]
    assert service_level(answered, abandoned, 20) == pytest.approx(4 / 9)
    assert service_level(answered, abandoned, 20, short_abandon_s=5) == pytest.approx(4 / 8)
    assert service_level([], [], 20) == 1.0
    assert abandonment_rate(6, 3) == pytest.approx(1 / 3)
    assert abandonment_rate(0, 0) == 0.0
    assert average_speed_of_answer(answered) == pytest.approx(125 / 6)
    assert math.isclose(average_speed_of_answer([]), 0.0)


@pytest.mark.parametrize(("gap", "expected"), [(0.005, "mono"), (0.02, "bi")])
def test_assignment_keeps_a_scarce_language_for_the_callers_who_need_it(
    gap: float, expected: str
) -> None:
    """Four English speakers, one of them also Spanish (scarce: under half speak it). An
    English caller goes to the bilingual agent only if the match beats the reserve cost."""
    team_ = [agent("bi", languages=frozenset({"en", "es"}))] + [
        agent(f"mono{k}" if k else "mono") for k in range(3)
    ]
    scores = {"c": {"bi": 0.2 + gap, "mono": 0.2, "mono1": 0.1, "mono2": 0.1}}
    q = predictive(reserve_weight=0.01, min_free_agents=1)
    r = route_predictive_assignment([chat("c", language="en")], team_, {"q": q}, NOW, scores)
    [d] = r.decisions
    assert d.agent_id == expected
    if expected == "mono":
        assert "bi is kept for callers in es (reserve cost 0.01)" in d.why
    # A Spanish caller needs the bilingual agent: no cost for the language they need.
    r = route_predictive_assignment(
        [chat("c", language="es")], team_, {"q": replace(q, language=None)}, NOW, scores
    )
    assert [d.agent_id for d in r.decisions] == ["bi"]


def test_route_arms_sends_each_arm_its_own_way() -> None:
    """The server's pass: the predictive arm of a queue with a model by its predictive
    method, the control arm and queues without a model by standard routing, with the why."""
    from opportune.core.arms import route_arms

    team_ = [agent("a"), agent("b", idle_since_ms=NOW - 10_000), agent("c"), agent("d")]
    q = predictive(min_free_agents=1, kpi_name="conv")
    waiting = [chat("p", 3), chat("c", 2), chat("u", 1, queue="other")]
    queues = {"q": q, "other": replace(q, name="other")}
    scores = {"p": {"a": 0.1, "b": 0.9, "c": 0.2, "d": 0.3}}
    arms = {"p": "predictive", "c": "control", "u": "predictive"}
    r = route_arms(waiting, team_, queues, NOW, arms=arms, modelled={"q"}, scores=scores)
    got = {d.interaction_id: (d.agent_id, d.method, arm) for d, arm in r.decisions}
    assert got["p"] == ("b", "predictive", "predictive")  # b scores best, though least idle
    assert got["c"][1:] == ("standard", "control")
    assert got["u"][1:] == ("standard", "predictive")
    why_u = next(d.why for d, _ in r.decisions if d.interaction_id == "u")
    assert why_u.startswith("no conv model for queue other yet: standard routing")
    assert len({a for a, _, _ in got.values()}) == 3  # never one agent slot twice
