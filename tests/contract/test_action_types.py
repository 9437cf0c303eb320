"""The contract every action type passes (after river's ``check_estimator``): a new type in
``core.action_types.ACTION_TYPES`` is done when this suite passes for it."""

from __future__ import annotations

import itertools
import json
from collections import deque
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from opportune.core.action_types import (
    ACTION_TYPES,
    ActionType,
    Known,
    action_type,
    duration_text,
    payload,
)
from opportune.core.actionmaps import ActionMap, Engagement, Schedule, Showing, answered, decide
from opportune.core.events import ReportState
from opportune.core.journey import Journey, JourneyEvent
from opportune.core.pacing import PacingTarget, QueueOutlook
from opportune.core.rules import Ruleset
from opportune.workspace.engagement import ACTION_DOCUMENTS, Action, ActionMapDoc

T0 = 1_767_000_000_000
STAFFED = QueueOutlook(5, 2, 2, 0, 0.01, 300, 120, 0, 0.3)
DECIDED = {"qualified", "holdout", "blocked", "offered"}  # the states the decision records
WORKER = {"completed", "errored"}  # the states the webhook worker records
KNOWN_STATES = DECIDED | set(get_args(ReportState)) | WORKER
TRIGGER = {"searched": "device activation"}

TYPES = sorted(ACTION_TYPES)


@pytest.fixture(params=TYPES)
def t(request: pytest.FixtureRequest) -> ActionType:
    return ACTION_TYPES[request.param]


def document(t: ActionType, **extra: Any) -> dict[str, Any]:
    """An action document of this type, from its example."""
    return {"type": t.channel, t.channel: dict(t.example), **extra}


def core_map(t: ActionType, name: str = "m", **doc: Any) -> ActionMap:
    d = ActionMapDoc.model_validate(
        {"name": name, "trigger": TRIGGER, "action": document(t), **doc}
    )
    return d.to_core({})


def run(maps: list[ActionMap], e: Engagement, t: int = 1_000, search: bool = True) -> Any:
    j = Journey(session_id="s1", started_at=T0, url="https://shop.example.com/help")
    rs = Ruleset(triggers=[m.trigger for m in maps])
    if search:
        rs.step(j, JourneyEvent("search", T0 + t, query="device activation"), T0 + t, {})
    return decide(
        visitor_id="v1",
        journey=j,
        members={},
        engagement=e,
        maps=maps,
        now=T0 + t,
        caps={},
        outlooks={"help": STAFFED},
        pacing=PacingTarget(),
    )


def test_it_is_registered_under_its_channel(t: ActionType) -> None:
    assert t.channel and ACTION_TYPES[t.channel] is t and action_type(t.channel) is t
    assert t.channel in ACTION_DOCUMENTS, "a workspace document part for the type"


def test_the_document_accepts_its_example(t: ActionType) -> None:
    act = Action.model_validate(document(t))
    assert act.type == t.channel
    m = core_map(t)
    assert m.channel == t.channel and t.channel in m.action


def test_the_document_refuses_a_bad_field_naming_it(t: ActionType) -> None:
    with pytest.raises(ValidationError) as bad:
        Action.model_validate({"type": t.channel, t.channel: {**t.example, "bogusField": 1}})
    assert f"{t.channel}.bogusField" in str(bad.value)
    with pytest.raises(ValidationError) as missing:
        Action.model_validate({"type": t.channel})
    assert repr(t.channel) in str(missing.value)


def test_its_defaults_validate_and_are_what_a_document_leaves_out(t: ActionType) -> None:
    lifetime = duration_text(t.defaults.lifetime_ms)
    Action.model_validate(document(t, timeout=lifetime))
    p = payload("ai_1", core_map(t), "en", {})
    if t.on_page:
        assert p["timeoutMs"] == t.defaults.lifetime_ms
        return
    assert t.defaults.timeout_ms is not None and t.defaults.retries is not None
    own = {**t.example, "timeout": duration_text(t.defaults.timeout_ms)}
    Action.model_validate({"type": t.channel, t.channel: {**own, "retries": t.defaults.retries}})
    assert p["timeoutMs"] == t.defaults.timeout_ms
    assert p["attempts"] == 1 + t.defaults.retries


@pytest.mark.parametrize("locale", ["en", "es"])
def test_the_payload_is_json_and_round_trips(t: ActionType, locale: str) -> None:
    texts = {"es": {k: f"es {k}" for k in (*t.texts, "ctaLabel")}}
    m = core_map(t)
    m = ActionMap(m.name, m.trigger, m.channel, {**m.action, "texts": texts}, m.queue)
    prefill = {"traits.firstName": "Ana"}
    p = payload("ai_1", m, locale, prefill)
    assert json.loads(json.dumps(p)) == p
    assert p["id"] == "ai_1" and p["map"] == "m" and p["type"] == t.channel
    assert payload("ai_1", m, locale, prefill) == p, "the same payload each time"
    assert "texts" not in m.action or m.action["texts"] == texts, "the map is not changed"


def test_states_follow_its_transitions_from_the_decision(t: ActionType) -> None:
    graph = t.transitions
    assert "qualified" in graph and "offered" in graph["qualified"]
    for state, targets in graph.items():
        assert state in KNOWN_STATES, state
        assert targets <= KNOWN_STATES, (state, targets - KNOWN_STATES)
        assert targets <= graph.keys(), f"{state} leads to states with no transitions"
    reached, todo = {"qualified"}, deque(["qualified"])
    while todo:
        for nxt in graph[todo.popleft()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert reached == graph.keys(), f"unreachable: {graph.keys() - reached}"
    assert any(not graph[s] for s in reached), "an instance must be able to end"
    if t.on_page:
        assert graph["offered"] - {"offered"} <= set(get_args(ReportState))


def test_a_decision_moves_along_its_transitions(t: ActionType) -> None:
    m = core_map(t)
    e = Engagement()
    first = run([m], e, search=False)
    assert first.why["m"].startswith("not qualified") and not first.records
    d = run([m], e)
    states = [r.state for r in d.records if r.map == "m"]
    for a, b in itertools.pairwise(states):
        assert b in t.transitions[a], (a, b)
    assert states[-1] == "offered" and d.why["m"].startswith("fired")
    fired = d.offers if t.on_page else d.webhooks
    assert [f.map.name for f in fired] == ["m"]


def test_a_blocked_decision_is_explained_and_recorded(t: ActionType) -> None:
    closed = core_map(t, "m")
    closed = ActionMap(closed.name, closed.trigger, closed.channel, closed.action, closed.queue,
                       schedule=Schedule(closed=True))  # fmt: skip
    d = run([closed], Engagement())
    assert d.why["m"] == "blocked: schedule: closed"
    assert [(r.state, r.reason) for r in d.records][-1] == ("blocked", "schedule: closed")
    assert "blocked" in t.transitions["qualified"]


def test_an_offer_on_the_page_blocks_it_only_if_it_shows_on_the_page(t: ActionType) -> None:
    e = Engagement(session_id="s1", showing=Showing("ai_x", "other", "content", T0, T0 + 60_000))
    d = run([core_map(t)], e)
    if t.on_page:
        assert d.why["m"] == "blocked: existing offer: other is showing" and not d.offers
    else:
        assert d.why["m"].startswith("fired") and not d.offers


def test_its_reports_end_the_offer_on_the_page(t: ActionType) -> None:
    for state in sorted(set().union(*t.transitions.values()) - DECIDED):
        e = Engagement(session_id="s1", showing=Showing("ai_1", "m", t.channel, T0, T0 + 1))
        answered(e, "ai_1", state, T0 + 500, t.channel)
        assert not e.showing.active, state
    e = Engagement(session_id="s1", showing=Showing("ai_1", "m", t.channel, T0, T0 + 1))
    answered(e, "ai_1", "offered", T0 + 500, t.channel)
    assert e.showing.active, "shown is not answered"


def test_its_references_are_checked_against_the_workspace(t: ActionType) -> None:
    nothing = t.problems(t.example, Known())
    assert all(isinstance(p, str) and p for p in nothing)
    everything = Known(
        queues=frozenset({str(t.example.get("queue"))}),
        templates=frozenset({str(t.example.get("template"))}),
    )
    assert t.problems(t.example, everything) == []
