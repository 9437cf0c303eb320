"""Action-map decisions: a table of cases, and properties over random visits."""

from __future__ import annotations

import math
from datetime import UTC
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opportune.core.actionmaps import (
    NOT_SHOWING,
    ActionMap,
    Caps,
    Engagement,
    MapState,
    PaceMemo,
    Schedule,
    Showing,
    answered,
    decide,
    in_holdout,
    instance_id,
)
from opportune.core.conditions import Predicate, parse_condition
from opportune.core.journey import Journey, JourneyEvent
from opportune.core.pacing import PacingTarget, QueueOutlook
from opportune.core.rules import Ruleset
from opportune.core.scores import Scores
from opportune.core.segments import Segment

T0 = 1_767_000_000_000  # a Monday? whatever: schedules below use explicit days
STAFFED = QueueOutlook(
    agents_available=5,
    capacity_per_agent=2,
    busy_slots=2,
    waiting=0,
    arrival_rate=0.01,
    handle_time_s=300,
    patience_s=120,
    pending_offers=0,
    acceptance_rate=0.3,
)
EMPTY = QueueOutlook(0, 2, 0, 0, 0.01, 300, 120, 0, 0.3)


def cmap(name: str, cond: dict[str, Any], channel: str = "content", **kw: Any) -> ActionMap:
    return ActionMap(name=name, trigger=parse_condition(cond), channel=channel, **kw)  # type: ignore[arg-type]


SEARCH = {"searched": "device activation"}
ERRORS = {"event": {"type": "form_error"}, "atLeast": 2}


class Visit:
    """One visit driven event by event, deciding after each as the engine does."""

    def __init__(self, maps: list[ActionMap], visitor: str = "v1", **kw: Any) -> None:
        self.maps = maps
        self.visitor = visitor
        self.j = Journey(session_id="s1", started_at=T0, facts={"device": "mobile"})
        self.e = Engagement()
        self.rs = Ruleset(triggers=[m.trigger for m in maps])
        self.kw = {"caps": {}, "outlooks": {"help": STAFFED}, "pacing": PacingTarget(), **kw}

    def event(self, kind: str, t: int, **fields: Any):
        self.rs.step(self.j, JourneyEvent(kind, T0 + t, **fields), T0 + t, {})
        return decide(
            visitor_id=self.visitor,
            journey=self.j,
            members={},
            engagement=self.e,
            maps=self.maps,
            now=T0 + t,
            **self.kw,
        )


def test_a_search_gets_the_content_offer_once() -> None:
    v = Visit([cmap("activation-help", SEARCH)])
    d = v.event("search", 0, query="Device activation help")
    assert [f.map.name for f in d.offers] == ["activation-help"]
    assert [r.state for r in d.records] == ["qualified", "offered"]
    answered(v.e, d.offers[0].instance, "accepted", T0 + 1000, "content")
    d = v.event("search", 60_000, query="device activation")
    assert d.offers == [] and d.why["activation-help"] == "already engaged this visit"


def test_priority_wins_and_the_loser_is_blocked_with_the_reason() -> None:
    v = Visit([cmap("low", SEARCH, priority=1), cmap("high", SEARCH, priority=5)])
    d = v.event("search", 0, query="device activation")
    assert [f.map.name for f in d.offers] == ["high"]
    assert d.why["low"] == "blocked: another map won (high)"
    # It waits: once the first offer is answered and the minimum wait has passed, it comes.
    answered(v.e, d.offers[0].instance, "accepted", T0 + 1000, "content")
    d = v.event("click", 5_000, name="x")
    assert d.why["low"].startswith("blocked: frequency cap: an offer 5 s ago")
    d = v.event("click", 11_000, name="x")
    assert [f.map.name for f in d.offers] == ["low"]


def test_a_rejection_caps_the_channel_unless_the_map_overrides_it() -> None:
    lenient = Caps(min_wait_ms=0, none_after_rejection=False)
    v = Visit([cmap("a", SEARCH, priority=2), cmap("b", SEARCH), cmap("c", SEARCH, caps=lenient)])
    d = v.event("search", 0, query="device activation")
    answered(v.e, d.offers[0].instance, "rejected", T0 + 500, "content")
    d = v.event("click", 20_000, name="x")
    assert d.why["b"] == "blocked: frequency cap: a content offer was rejected this visit"
    assert [f.map.name for f in d.offers] == ["c"]


def test_chat_is_paced_by_the_queue_outlook() -> None:
    struggling = cmap("chat-help", ERRORS, channel="chat", queue="help")
    v = Visit([struggling], outlooks={"help": EMPTY})
    v.event("form_error", 0, name="loan")
    d = v.event("form_error", 1_000, name="loan")
    assert d.offers == [] and d.why["chat-help"] == "blocked: no agents: no agents available"
    assert [(r.state, r.reason) for r in d.records][-1] == (
        "blocked",
        "no agents: no agents available",
    )
    # Agents log in: the same due map is offered on the next event, the block recorded once.
    v.kw["outlooks"] = {"help": STAFFED}
    d = v.event("click", 2_000, name="x")
    assert [f.map.name for f in d.offers] == ["chat-help"]


def test_an_overloaded_queue_throttles_on_the_predicted_service_level() -> None:
    busy = QueueOutlook(2, 1, 2, 6, 0.05, 300, 60, 2, 0.5)
    v = Visit([cmap("chat-help", ERRORS, channel="chat", queue="help")], outlooks={"help": busy})
    v.event("form_error", 0, name="loan")
    d = v.event("form_error", 1_000, name="loan")
    assert d.why["chat-help"].startswith("blocked: service-level throttle: predicted")


def test_after_a_chat_with_an_agent_no_other_chat_is_offered() -> None:
    v = Visit(
        [
            cmap("c1", ERRORS, channel="chat", queue="help", priority=2),
            cmap("c2", ERRORS, channel="chat", queue="help"),
        ]
    )
    v.event("form_error", 0)
    d = v.event("form_error", 1_000)
    answered(v.e, d.offers[0].instance, "started", T0 + 2_000, "chat")
    d = v.event("click", 60_000)
    assert d.why["c2"] == "blocked: frequency cap: already chatted with an agent this visit"


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        (Schedule(tz=UTC, closed=True), "schedule: closed"),
        (Schedule(tz=UTC, start_ms=T0 + 86_400_000), "schedule: before the start date"),
        (Schedule(tz=UTC, end_ms=T0 - 1), "schedule: after the end date"),
        (Schedule(tz=UTC, days=frozenset()), "schedule: closed on"),
        (Schedule(tz=UTC, start_minute=0, end_minute=0), "schedule: outside hours"),
    ],
)
def test_outside_its_schedule_nothing_shows(schedule: Schedule, reason: str) -> None:
    v = Visit([cmap("m", SEARCH, schedule=schedule)])
    d = v.event("search", 0, query="device activation")
    assert d.offers == [] and d.why["m"].startswith("blocked: " + reason)


def test_page_rules_and_activation_delay() -> None:
    only_help = (Predicate("glob", "*/help*"),)
    v = Visit([cmap("m", SEARCH, include_urls=only_help, activation="delay", delay_ms=8_000)])
    d = v.event("search", 0, query="device activation")
    assert d.offers == [] and d.recheck_in_ms == 8_000
    d = v.event("page_view", 9_000, url="https://b/apply")
    assert d.why["m"] == "blocked: page URL: not on an included page"
    d = v.event("page_view", 10_000, url="https://b/help/device")
    assert [f.map.name for f in d.offers] == ["m"]


def test_next_page_and_next_visit_activation() -> None:
    v = Visit(
        [cmap("np", SEARCH, activation="next_page"), cmap("nv", SEARCH, activation="next_visit")]
    )
    d = v.event("search", 0, query="device activation")
    assert d.offers == [] and d.why["nv"] == "qualified; engages on the next visit"
    d = v.event("page_view", 1_000, url="https://b/")
    assert [f.map.name for f in d.offers] == ["np"]
    # The next visit: the map qualified before is due at once.
    v.j = Journey(session_id="s2", started_at=T0 + 3_600_000)
    d = v.event("page_view", 3_600_000, url="https://b/")
    assert [f.map.name for f in d.offers] == ["nv"]


def test_a_holdout_visitor_qualifies_but_is_never_engaged() -> None:
    held = next(f"v{i}" for i in range(1000) if in_holdout(f"v{i}", "m", 0.5))
    v = Visit([cmap("m", SEARCH, holdout=0.5)], visitor=held)
    d = v.event("search", 0, query="device activation")
    assert d.offers == [] and [r.state for r in d.records] == ["qualified", "holdout"]
    assert v.event("search", 1, query="device activation").offers == []


def test_webhooks_fire_beside_an_offer() -> None:
    v = Visit([cmap("lead", SEARCH, channel="webhook"), cmap("offer", SEARCH)])
    d = v.event("search", 0, query="device activation")
    assert [f.map.name for f in d.webhooks] == ["lead"] and [f.map.name for f in d.offers] == [
        "offer"
    ]


def test_holdout_is_deterministic_and_unbiased() -> None:
    n, share = 20_000, 0.2
    held = sum(in_holdout(f"visitor-{i}", "m", share) for i in range(n))
    assert abs(held / n - share) < 4 * math.sqrt(share * (1 - share) / n)
    assert [in_holdout(f"visitor-{i}", "m", share) for i in range(50)] == [
        in_holdout(f"visitor-{i}", "m", share) for i in range(50)
    ]
    # Independent across maps: being held out of one says nothing of another.
    both = sum(
        in_holdout(f"visitor-{i}", "m", 0.5) and in_holdout(f"visitor-{i}", "n", 0.5)
        for i in range(n)
    )
    assert abs(both / n - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)


events = st.lists(
    st.tuples(
        st.sampled_from(["search", "form_error", "page_view", "click"]),
        st.integers(0, 30_000),
        st.booleans(),
        st.sampled_from(["none", "accepted", "rejected"]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(events, st.lists(st.integers(0, 3), min_size=3, max_size=3))
def test_properties_of_decisions_over_random_visits(stream, priorities) -> None:
    maps = [
        cmap("a", SEARCH, priority=priorities[0]),
        cmap("b", ERRORS, priority=priorities[1]),
        cmap(
            "c",
            {"metric": "pageViews", "gte": 2},
            priority=priorities[2],
            channel="chat",
            queue="help",
        ),
    ]
    v = Visit(maps)
    t = 0
    offered: list[tuple[int, str]] = []
    for kind, gap, answer_now, how in stream:
        t += gap
        d = v.event(
            kind,
            t,
            query="device activation" if kind == "search" else None,
            url="https://b/x" if kind == "page_view" else None,
        )
        assert len(d.offers) <= 1  # never two offers at once
        for inst, m in ((f.instance, f.map) for f in d.offers):
            assert inst == instance_id("s1", m.name)
            # The winner had the highest priority of the maps due and unblocked now.
            losers = [n for n, why in d.why.items() if why.startswith("blocked: another map won")]
            assert all(m.priority >= next(x.priority for x in maps if x.name == n) for n in losers)
            if offered:
                assert t - offered[-1][0] >= 10_000  # the minimum wait between offers
            offered.append((t, m.name))
            if answer_now and how != "none":
                answered(v.e, inst, how, T0 + t, m.channel)
    names = [n for _, n in offered]
    assert len(names) == len(set(names))  # each map at most once per visit


def test_a_recheck_is_asked_only_when_time_alone_can_make_a_trigger_hold() -> None:
    idle_on_help = {
        "all": [
            {"attribute": "currentUrl", "glob": "*/help*"},
            {"event": {"type": "idle"}, "within": "2m"},
        ]
    }
    dwell = {
        "all": [
            {"attribute": "currentUrl", "glob": "*/help*"},
            {"metric": "timeOnPage", "gte": "30s"},
        ]
    }
    v = Visit([cmap("idle-help", idle_on_help), cmap("dwell", dwell)])
    # On another page neither can come true without an event: no polling.
    assert v.event("page_view", 0, url="https://b/apply").recheck_in_ms is None
    # On the help page, time on page will reach 30 s by itself: look again.
    assert v.event("page_view", 1_000, url="https://b/help").recheck_in_ms == 5_000


# ---- what makes decisions cheaper gives the same answers ------------------------------

OUTLOOKS = [STAFFED, EMPTY, QueueOutlook(2, 1, 2, 6, 0.05, 300, 60, 2, 0.5)]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["search", "form_error", "page_view", "click"]),
            st.integers(0, 20_000),
            st.integers(0, len(OUTLOOKS) - 1),
            st.sampled_from(["none", "accepted", "rejected", "started"]),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_a_pace_memo_gives_the_decisions_of_pacing_each_time(stream) -> None:
    # Two chat maps on one queue (paced once per decision), one on a queue with no
    # outlook, and a content map competing with them.
    maps = [
        cmap("c1", ERRORS, channel="chat", queue="help", priority=2),
        cmap("c2", {"metric": "pageViews", "gte": 1}, channel="chat", queue="help", priority=1),
        cmap("c3", SEARCH, channel="chat", queue="nowhere", priority=3),
        cmap("offer", {"metric": "clicks", "gte": 2}, caps=Caps(min_wait_ms=0)),
    ]
    plain, memoised = Visit(maps), Visit(maps, pace_memo=PaceMemo(size=2))
    t = 0
    for kind, gap, which, how in stream:
        t += gap
        fields: dict[str, Any] = {
            "query": "device activation" if kind == "search" else None,
            "url": "https://b/x" if kind == "page_view" else None,
        }
        for v in (plain, memoised):
            v.kw["outlooks"] = {"help": OUTLOOKS[which]}
        a, b = plain.event(kind, t, **fields), memoised.event(kind, t, **fields)
        assert (a.why, a.records, a.recheck_in_ms) == (b.why, b.records, b.recheck_in_ms)
        assert [(f.instance, f.map.name) for f in a.offers] == [
            (f.instance, f.map.name) for f in b.offers
        ]
        for inst, m in ((f.instance, f.map) for f in a.offers):
            if how != "none":
                for v in (plain, memoised):
                    answered(v.e, inst, how, T0 + t, m.channel)
        assert plain.e == memoised.e


@given(st.integers(T0 - 400 * 86_400_000, T0 + 400 * 86_400_000))
def test_an_always_open_schedule_is_open_at_any_time(now: int) -> None:
    for always in (Schedule(), Schedule(tz=UTC), Schedule(tz=UTC, end_minute=24 * 60)):
        assert always.why_closed(now) is None
    # A schedule with any limit still reads the clock.
    assert Schedule(tz=UTC, start_minute=0, end_minute=0).why_closed(now) is not None
    assert Schedule(tz=UTC, days=frozenset()).why_closed(now) is not None


score_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.2, 0.3, 0.6, 1.0, 0, 1, True, None, "0.5"]),
)


@given(
    st.lists(score_values, min_size=4, max_size=4),
    st.sampled_from(
        [
            {"probability": {"gte": 0.2}},
            {"maxQuantileAbove": 0.6, "quantileBelow": 0.3},
            {"quantile": {"lt": 0.5}, "maxProbability": {"gt": 0.1}, "probability": 0.05},
            {"maxQuantile": {"lte": 1}},
        ]
    ),
)
def test_a_score_trigger_tests_floats_as_its_predicates_do(values, tests) -> None:
    # Scores are compared as floats directly (the hot path); the predicates are the
    # definition.
    node = parse_condition({"score": "loan", **tests})
    j = Journey(session_id="s", started_at=T0)
    j.scores["loan"] = Scores(*values)
    assert node.holds(j, T0, {}) == all(t(values[i]) for i, t in node.tests)


@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "gone"]), unique=True),
    st.dictionaries(st.sampled_from(["x", "y", "a"]), st.integers(0, 3)),
)
def test_the_members_a_decision_reads_are_listed_in_rule_order(in_visit, assigned) -> None:
    rs = Ruleset(
        [
            Segment("d", parse_condition({"segment": "b"})),
            Segment("b", parse_condition({"returning": True})),
            Segment("a", parse_condition({"segment": "d"})),
            Segment("c", parse_condition({"returning": False})),
            Segment("x", parse_condition({"returning": True}), scope="customer"),
            Segment("y", parse_condition({"returning": True}), scope="customer"),
        ]
    )
    j = Journey(session_id="s", started_at=T0)
    for i, name in enumerate(in_visit):  # entered in any order, "gone": no longer a rule
        j.segments[name] = T0 + i
    assignments = {name: [T0, T0 + 1 + k] for name, k in assigned.items()}
    now = T0 + 2
    expected = {r.name: j.segments[r.name] for r in rs.segments if r.name in j.segments}
    expected = {k: v for k, v in expected.items() if rs.segment_by_name[k].scope == "session"}
    for name, (since, expires) in assignments.items():
        if expires > now and name in rs.segment_by_name:
            expected[name] = since
    got = rs.members(j, assignments, now)
    assert list(got.items()) == list(expected.items())


@pytest.mark.parametrize(
    "showing",
    [[], ["ai_1", "m", "content", T0, T0 + 30_000]],
)
def test_the_live_state_keeps_its_encoding(showing: list[Any]) -> None:
    # As states were written before the typed records: positional arrays, [] for no offer.
    old = ["s1", {"m": [T0, T0, "done"]}, ["m|x"], showing, T0, {"chat": T0}, 0, {}, {}]
    e = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=Engagement)
    assert e.maps["m"] == MapState(T0, T0, "done")
    assert e.showing.active == bool(showing)
    assert e.showing == (Showing(*showing) if showing else NOT_SHOWING)
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(e), type=Engagement)
    assert again == e
    if showing:
        assert msgspec.msgpack.encode(e) == msgspec.msgpack.encode(old)
