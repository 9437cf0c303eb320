"""The incremental evaluation equals the from-scratch one, for random rules and streams."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opportune.core.conditions import Context, parse_condition
from opportune.core.journey import Journey, JourneyEvent
from opportune.core.outcomes import Outcome
from opportune.core.rules import DAY_MS, RulesError, Ruleset, evaluate_history
from opportune.core.segments import Segment

FACTS = {"device": "mobile", "utmMedium": "cpc", "country": "ES", "landingUrl": "https://b/x"}
URLS = ["https://b/", "https://b/apply", "https://b/help/device", "https://b/confirmation"]
QUERIES = ["device activation", "travel alert", "loan", "Travel ALERT now"]
NAMES = ["loan", "loan_submitted", "cart_add", "purchase"]

filters = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["page_view", "search", "click", "form_error", "custom"])
        | st.lists(st.sampled_from(["page_view", "click", "custom"]), min_size=1, max_size=2),
        "url": st.sampled_from(["*apply*", "*/help/*", {"contains": "CONFIRM"}]),
        "query": st.sampled_from(["travel alert", {"startsWith": "device"}]),
        "name": st.sampled_from(["loan", {"in": ["cart_add", "purchase"]}]),
        "attributes": st.sampled_from([{"value": {"gte": 20}}, {"step": 2}]),
    },
)
durations = st.sampled_from(["30s", "2m", "10m", 45])
leaves = st.one_of(
    st.fixed_dictionaries(
        {
            "attribute": st.sampled_from(["device", "utmMedium", "country"]),
            "equals": st.sampled_from(["MOBILE", "cpc", "FR"]),
        }
    ),
    st.fixed_dictionaries(
        {"attribute": st.just("attributes.value"), "gt": st.sampled_from([10, 40])}
    ),
    st.fixed_dictionaries(
        {"attribute": st.just("currentUrl"), "glob": st.sampled_from(["*apply*", "*help*"])}
    ),
    st.fixed_dictionaries({"attribute": st.just("identified"), "equals": st.booleans()}),
    st.fixed_dictionaries({"attribute": st.just("traits.tier"), "exists": st.booleans()}),
    st.fixed_dictionaries(
        {
            "metric": st.sampled_from(["events", "pageViews", "formErrors", "scrollDepth"]),
            "gte": st.integers(0, 4),
        }
    ),
    st.fixed_dictionaries(
        {"metric": st.sampled_from(["timeOnSite", "timeOnPage"]), "gte": durations}
    ),
    st.fixed_dictionaries({"returning": st.booleans()}),
    st.fixed_dictionaries(
        {"event": filters}, optional={"atLeast": st.integers(0, 3), "within": durations}
    ),
    st.fixed_dictionaries(
        {"event": filters, "atMost": st.integers(1, 3)}, optional={"within": durations}
    ),
    st.fixed_dictionaries({"searched": st.sampled_from(["travel alert", ["device", "loan"]])}),
    st.fixed_dictionaries(
        {"sequence": st.lists(filters, min_size=2, max_size=3)}, optional={"within": durations}
    ),
    st.fixed_dictionaries(
        {"sum": st.just("value"), "gte": st.sampled_from([0, 30, 100])}, optional={"of": filters}
    ),
)
conditions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.fixed_dictionaries({"all": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"any": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"not": inner}),
    ),
    max_leaves=6,
)


@st.composite
def streams(draw: st.DrawFn) -> list[JourneyEvent]:
    n = draw(st.integers(1, 25))
    t = 1_000_000
    out = []
    for i in range(n):
        t += draw(st.sampled_from([0, 1000, 15_000, 30_000, 45_000, 120_000, 600_000]))
        kind = draw(
            st.sampled_from(
                ["page_view", "search", "click", "form_error", "custom", "scroll", "identify"]
            )
        )
        attrs: dict[str, Any] = {}
        if draw(st.booleans()):
            attrs["value"] = draw(st.sampled_from([5, 25, 50.5, "12", "x", True]))
        if kind == "scroll":
            attrs["depth"] = draw(st.sampled_from([25, 50, 90]))
        if kind == "identify" and draw(st.booleans()):
            attrs = {"tier": "gold"}
        out.append(
            JourneyEvent(
                type=kind,
                ts=t,
                id=f"e{i}",
                url=draw(st.sampled_from(URLS)) if kind in ("page_view", "click") else None,
                query=draw(st.sampled_from(QUERIES)) if kind == "search" else None,
                name=draw(st.sampled_from(NAMES)) if kind in ("custom", "click") else None,
                attributes=attrs,
            )
        )
    return out


def run_incremental(rs: Ruleset, history: list[JourneyEvent], visit: int):
    j = Journey(session_id="s", started_at=history[0].ts, facts=dict(FACTS), visit_number=visit)
    assignments: dict[str, list[int]] = {}
    after = []
    for ev in history:
        changes = rs.step(j, ev, max(j.last_at, ev.ts), assignments)
        assert not changes.errors
        after.append({r.name: r.name in j.segments for r in rs.segments})
    return j, after


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(conditions, min_size=1, max_size=4), conditions, streams(), st.integers(1, 3))
def test_incremental_equals_from_scratch(conds, outcome_cond, history, visit) -> None:
    # Segment i may read segment i-1, so references are exercised as well.
    segments = []
    for i, c in enumerate(conds):
        cond = {"any": [c, {"segment": f"s{i - 1}"}]} if i and i % 2 else c
        segments.append(Segment(f"s{i}", parse_condition(cond)))
    outcomes = [
        Outcome("o", parse_condition(outcome_cond), value_from="value"),
        Outcome("o2", parse_condition({"all": [{"segment": "s0"}, outcome_cond]})),
    ]
    rs = Ruleset(segments, outcomes)
    j, after = run_incremental(rs, history, visit)
    ctx = Context(facts=FACTS, visit_number=visit, started_at=history[0].ts)
    for end in range(1, len(history) + 1):
        expected = evaluate_history(rs, history[:end], ctx)
        assert after[end - 1] == expected.segments, f"after event {end - 1}"
    expected = evaluate_history(rs, history, ctx)
    assert {k: v[0] for k, v in j.outcomes.items()} == {
        k: max(e.ts for e in history[: i + 1]) for k, i in expected.outcomes.items()
    }


def test_customer_segment_is_assigned_once_and_survives_the_visit() -> None:
    rs = Ruleset(
        [
            Segment(
                "searcher",
                parse_condition({"searched": "loan"}),
                scope="customer",
                expires_after_days=7,
            )
        ]
    )
    j = Journey(session_id="s", started_at=0, facts={})
    assignments: dict[str, list[int]] = {}
    c = rs.step(j, JourneyEvent("search", 1000, query="loan rates"), 1000, assignments)
    assert c.assigned == [("searcher", 1000, 1000 + 7 * DAY_MS)] and not c.entered
    # A new visit: the condition does not hold there, the assignment still does.
    j2 = Journey(session_id="s2", started_at=DAY_MS, facts={})
    rs.step(j2, JourneyEvent("page_view", DAY_MS, url="https://b/"), DAY_MS, assignments)
    assert rs.members(j2, assignments, DAY_MS) == {"searcher": 1000}
    assert rs.members(j2, assignments, 1000 + 7 * DAY_MS) == {}


def test_a_session_segment_is_left_when_its_window_passes() -> None:
    rs = Ruleset(
        [
            Segment(
                "busy", parse_condition({"event": {"type": "click"}, "atLeast": 2, "within": "1m"})
            )
        ]
    )
    j = Journey(session_id="s", started_at=0)
    a: dict[str, list[int]] = {}
    rs.step(j, JourneyEvent("click", 0), 0, a)
    assert rs.step(j, JourneyEvent("click", 10_000), 10_000, a).entered == [("busy", 10_000)]
    assert rs.step(j, JourneyEvent("page_view", 90_000, url="u"), 90_000, a).left == [
        ("busy", 90_000)
    ]


def test_an_outcome_is_achieved_once_with_its_value() -> None:
    rs = Ruleset(
        outcomes=[
            Outcome(
                "loan",
                parse_condition({"event": {"type": "custom", "name": "loan_submitted"}}),
                value_from="amount",
            )
        ]
    )
    j = Journey(session_id="s", started_at=0)
    a: dict[str, list[int]] = {}
    ev = JourneyEvent("custom", 5, name="loan_submitted", attributes={"amount": 5000})
    assert rs.step(j, ev, 5, a).achieved == [("loan", 5, 5000.0)]
    assert rs.step(j, JourneyEvent("custom", 6, name="loan_submitted"), 6, a).achieved == []


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ([("a", {"segment": "zz"})], "segment 'a': refers to unknown segment 'zz'"),
        (
            [("a", {"segment": "b"}), ("b", {"not": {"segment": "a"}})],
            "segments refer to each other in a cycle: a -> b -> a",
        ),
        ([("a", {"segment": "a"})], "cycle: a -> a"),
        ([("a", {"returning": True}), ("a", {"returning": False})], "segment 'a': defined twice"),
    ],
)
def test_rules_that_cannot_work_together_are_refused(segments, message) -> None:
    with pytest.raises(RulesError) as err:
        Ruleset([Segment(n, parse_condition(c)) for n, c in segments])
    assert message in str(err.value)


def test_a_broken_rule_fails_alone() -> None:
    good = Segment("good", parse_condition({"event": {"type": "click"}}))
    bad = Segment("bad", parse_condition({"metric": "events", "gte": 1}))

    class Boom(Exception):
        pass

    def explode(*_a: Any) -> bool:
        raise Boom("kaput")

    object.__setattr__(bad.condition, "holds", explode)
    rs = Ruleset([bad, good])
    j = Journey(session_id="s", started_at=0)
    c = rs.step(j, JourneyEvent("click", 0), 0, {})
    assert c.entered == [("good", 0)]
    assert c.errors == [("bad", "Boom: kaput")]


@settings(max_examples=500, deadline=None)
@given(leaves, streams(), st.integers(1, 3))
def test_each_journey_pattern_alone_equals_from_scratch(leaf, history, visit) -> None:
    rs = Ruleset([Segment("s", parse_condition(leaf))])
    _, after = run_incremental(rs, history, visit)
    ctx = Context(facts=FACTS, visit_number=visit, started_at=history[0].ts)
    for end in range(1, len(history) + 1):
        assert after[end - 1] == evaluate_history(rs, history[:end], ctx).segments
