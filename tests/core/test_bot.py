"""The bot flow interpreter, turn by turn: slots and their retries, conditions, buttons,
fallbacks then hand-over, escalation, and the state's JSON round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opportune.core.bot import (
    Ask,
    BotContext,
    BotState,
    BotTurn,
    Branch,
    Button,
    Check,
    Choose,
    End,
    Fallback,
    Flow,
    HandOver,
    Handover,
    Intent,
    Link,
    Media,
    Say,
    begin,
    escalate,
    parse_when,
    respond,
)
from opportune.core.conditions import ConditionError


def t(en: str, es: str | None = None) -> dict[str, str]:
    return {"en": en, "es": es or f"es:{en}"}


def flow(**changes: Any) -> Flow:
    """A small flow with every kind of step."""
    steps = [
        Say("hi", t("Hello"), next="guide"),
        Link("guide", t("The guide:"), t("Guide"), "/help#a", next="menu"),
        Choose(
            "menu",
            t("Pick one"),
            (
                Button(t("Card", "Tarjeta"), "card", step="digits"),
                Button(t("Loans", "Préstamos"), "loans", intent="loan"),
                Button(t("Person"), "person", handover=True),
            ),
        ),
        Ask("digits", t("Last 4?"), "last4", Check("digits", length=4), t("4 digits please"),
            next="which", max_retries=2),
        Branch("which", parse_when({"slot": "last4", "equals": "0000"}), "blocked", "done"),
        HandOver("blocked", t("A colleague will help"), queue="fraud", reason="card 0000"),
        End("done", t("Activated")),
        Media("pic", "image", "/a.png", t("A picture"), next="done"),
        Ask("amount", t("How much?"), "amount", Check("number", minimum=1, maximum=100),
            t("1 to 100"), next="done", max_retries=0, on_fail="pic"),
        HandOver("loan-step", t("Passing you to loans")),
    ]  # fmt: skip
    base: dict[str, Any] = {
        "name": "f",
        "languages": ("en", "es"),
        "threshold": 0.5,
        "start": "hi",
        "handover_queue": "support",
        "handover_text": t("Passing you over"),
        "fallback": Fallback(t("Sorry?"), after=2),
        "intents": {
            "card": Intent("card", "menu"),
            "loan": Intent("loan", "loan-step", queue="loans"),
            "amount": Intent("amount", "amount"),
        },
        "steps": {s.name: s for s in steps},
    }
    return Flow(**{**base, **changes})


F = flow()
NONE = BotContext()


def texts(turn: BotTurn) -> list[str]:
    return [r.text for r in turn.replies]


def at_digits() -> BotState:
    return BotState(step="digits", intent="card", confidence=0.9)


def test_begin_runs_until_a_step_waits_and_sends_rich_payloads() -> None:
    turn = begin(F, locale="en")
    assert texts(turn) == ["Hello", "The guide:", "Pick one"]
    assert turn.replies[1].payload == {"link": {"label": "Guide", "url": "/help#a"}}
    assert turn.replies[2].payload == {
        "buttons": [
            {"label": "Card", "value": "card"},
            {"label": "Loans", "value": "loans"},
            {"label": "Person", "value": "person"},
        ]
    }
    assert turn.state.step == "menu" and not turn.done and turn.handover is None


@pytest.mark.parametrize(
    ("locale", "first"), [("es", "es:Hello"), ("es-MX", "es:Hello"), ("fr", "Hello")]
)
def test_the_locale_falls_back_to_the_flows_first_language(locale: str, first: str) -> None:
    assert texts(begin(F, locale=locale))[0] == first


@pytest.mark.parametrize(
    ("choice", "text", "expect"),
    [
        ("card", "Card", ["Last 4?"]),  # by value
        (None, "  tarjeta ", ["Last 4?"]),  # typed label, any language, any case
        ("nonsense", "card", ["Last 4?"]),  # an unknown value: the words still count
        (None, "PERSON", ["Passing you over"]),  # typed label of the hand-over button
        (None, "loans", ["Passing you to loans"]),  # typed value
        ("loans", "", ["Passing you to loans"]),  # a button to an intent
    ],
)
def test_buttons(choice: str | None, text: str, expect: list[str]) -> None:
    state = begin(F, locale="en").state
    assert texts(respond(F, state, text=text, choice=choice, locale="en")) == expect


def test_a_button_to_an_intent_sets_it_and_its_queue() -> None:
    state = begin(F, locale="en").state
    turn = respond(F, state, text="Loans", choice="loans", locale="en")
    assert turn.state.intent == "loan" and turn.state.confidence == 1.0
    assert turn.handover == Handover("loans", "intent loan")


def test_the_handover_button_escalates() -> None:
    state = begin(F, locale="en").state
    turn = respond(F, state, text="Person", choice="person", locale="en")
    assert turn.handover == Handover("support", "asked for a person")


@pytest.mark.parametrize(
    ("answers", "expect", "slot"),
    [
        (["1234"], ["Activated"], "1234"),
        (["12 34"], ["Activated"], "1234"),
        (["12", "1234"], ["4 digits please", "Activated"], "1234"),
        (["12", "abcd", "1234"], ["4 digits please", "4 digits please", "Activated"], "1234"),
        (["0000"], ["A colleague will help"], "0000"),  # the condition on the slot
    ],
)
def test_a_question_retries_until_its_answer_validates(
    answers: list[str], expect: list[str], slot: str
) -> None:
    state, said = at_digits(), []
    for answer in answers:
        turn = respond(F, state, text=answer, locale="en")
        said += texts(turn)
        state = turn.state
    assert said == expect
    assert state.slots["last4"] == slot and state.retries == 0


def test_a_question_hands_over_after_its_last_retry() -> None:
    state = at_digits()
    for _ in range(2):
        turn = respond(F, state, text="no idea", locale="en")
        assert turn.handover is None and turn.state.step == "digits"
        state = turn.state
    turn = respond(F, state, text="still no", locale="en")
    assert turn.handover == Handover("support", "no valid last4 after 3 tries")
    assert turn.state.queue == "support"


def test_a_question_with_on_fail_goes_there_instead() -> None:
    state = BotState(step="amount", intent="amount")
    turn = respond(F, state, text="lots", locale="en")
    assert texts(turn) == ["A picture", "Activated"] and turn.done
    assert turn.replies[0].payload == {"image": {"url": "/a.png", "alt": "A picture"}}
    assert respond(F, state, text="1,5", locale="en").state.slots == {"amount": "15"}


def test_a_clear_new_request_during_a_question_is_followed() -> None:
    turn = respond(F, at_digits(), text="a loan please", guess=("loan", 0.9), locale="en")
    assert turn.state.intent == "loan" and turn.handover == Handover("loans", "intent loan")
    # a weak guess is not enough: the question is asked again
    weak = respond(F, at_digits(), text="a loan?", guess=("loan", 0.45), locale="en")
    assert texts(weak) == ["4 digits please"]


def test_fallbacks_then_hand_over() -> None:
    state = BotState()
    first = respond(F, state, text="blah", guess=("card", 0.3), locale="en")
    assert texts(first) == ["Sorry?"] and first.state.fallbacks == 1 and first.handover is None
    second = respond(F, first.state, text="blah", guess=(None, 0.0), locale="en")
    assert second.handover == Handover("support", "2 fallbacks")
    assert texts(second) == ["Passing you over"]


def test_a_matched_intent_resets_the_fallbacks() -> None:
    state = respond(F, BotState(), text="blah", locale="en").state
    state = respond(F, state, text="card", guess=("card", 0.8), locale="en").state
    assert state.fallbacks == 0 and state.step == "menu"


def test_fallback_buttons_are_offered_and_can_be_pressed() -> None:
    buttons = (Button(t("Loans"), "loans-fb", intent="loan"),)
    f = flow(fallback=Fallback(t("Sorry?"), after=1, then="buttons", buttons=buttons))
    turn = respond(f, BotState(), text="blah", locale="en")
    assert turn.replies[0].payload == {"buttons": [{"label": "Loans", "value": "loans-fb"}]}
    assert turn.handover is None
    pressed = respond(f, turn.state, text="Loans", choice="loans-fb", locale="en")
    assert pressed.state.intent == "loan"


@pytest.mark.parametrize(
    ("intent", "queue", "reason"),
    [
        (None, "support", "asked for a person"),
        ("card", "support", "asked for a person (intent card)"),
        ("loan", "loans", "asked for a person (intent loan)"),
    ],
)
def test_escalate(intent: str | None, queue: str, reason: str) -> None:
    turn = escalate(F, BotState(intent=intent), locale="es")
    assert turn.handover == Handover(queue, reason)
    assert texts(turn) == ["es:Passing you over"] and turn.state.queue == queue


def test_after_a_hand_over_the_bot_only_says_a_person_is_coming() -> None:
    state = escalate(F, BotState(), locale="en").state
    turn = respond(F, state, text="hello?", guess=("card", 0.99), locale="en")
    assert texts(turn) == ["Passing you over"] and turn.handover is None


def test_a_step_the_flow_no_longer_has_is_forgotten() -> None:
    turn = respond(F, BotState(step="gone"), text="card", guess=("card", 0.9), locale="en")
    assert turn.state.step == "menu"


def test_a_flow_that_loops_hands_over_instead_of_spinning() -> None:
    looping = flow(steps={**F.steps, "hi": Say("hi", t("Hello"), next="hi")})
    turn = begin(looping, locale="en")
    assert turn.handover == Handover("support", "the flow ran in a loop")


@pytest.mark.parametrize(
    ("when", "slots", "ctx", "holds"),
    [
        ({"segment": "vip"}, {}, BotContext(segments=frozenset({"vip"})), True),
        ({"segment": "vip"}, {}, BotContext(), False),
        ({"score": "loan", "above": 0.5}, {}, BotContext(scores={"loan": 0.6}), True),
        ({"score": "loan", "above": 0.5}, {}, BotContext(scores={"loan": 0.5}), False),
        ({"score": "loan", "below": 0.5}, {}, BotContext(), False),  # no score: unknown
        ({"slot": "s", "equals": "Sí"}, {"s": "si"}, BotContext(), True),
        ({"slot": "s", "in": ["a", "b"]}, {"s": "B"}, BotContext(), True),
        ({"slot": "s", "present": False}, {}, BotContext(), True),
        ({"slot": "n", "above": 10}, {"n": "12"}, BotContext(), True),
        ({"slot": "n", "above": 10}, {"n": "twelve"}, BotContext(), False),
        ({"form": "topic", "equals": "x"}, {}, BotContext(form={"topic": "X"}), True),
        ({"not": {"segment": "vip"}}, {}, BotContext(), True),
        ({"any": [{"segment": "a"}, {"slot": "s", "present": True}]}, {"s": "1"}, NONE, True),
        ({"all": [{"segment": "a"}, {"slot": "s", "present": True}]}, {"s": "1"}, NONE, False),
    ],
)  # fmt: skip
def test_conditions(when: dict[str, Any], slots: dict[str, str], ctx: BotContext, holds: bool):
    assert parse_when(when).holds(slots, ctx) is holds


@pytest.mark.parametrize(
    ("when", "path", "message"),
    [
        ({"segmnt": "x"}, "if", "one of segment, score, slot, form, all, any, not"),
        ({"score": "x"}, "if", "give above or below"),
        ({"score": "x", "above": 2}, "if.above", "a probability between 0 and 1"),
        ({"slot": "s", "equal": 1}, "if.equal", "unknown field for a slot condition"),
        ({"all": [{"segment": "a"}, {"slot": ""}]}, "if.all[1].slot", "a name"),
        ({"any": []}, "if.any", "a non-empty list of conditions"),
        ("vip", "if", "a condition is a mapping like {segment: name}"),
    ],
)
def test_condition_errors_name_the_field(when: Any, path: str, message: str) -> None:
    with pytest.raises(ConditionError) as info:
        parse_when(when, ["if"])
    assert str(info.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("check", "text", "value"),
    [
        (Check("digits", length=4), "1234", "1234"),
        (Check("digits", length=4), "12345", None),
        (Check("digits", length=4), "١٢٣٤", None),  # other scripts' digits are not card digits
        (Check("options", options=("Visa", "Débito")), " VISA ", "Visa"),
        (Check("options", options=("Visa",)), "amex", None),
        (Check("email"), "ana@example.com", "ana@example.com"),
        (Check("email"), "ana@", None),
        (Check("regex", pattern=r"[A-Z]{2}\d{2}"), "ES12", "ES12"),
        (Check("regex", pattern=r"[A-Z]{2}\d{2}"), "ES12x", None),
        (Check("number", minimum=1000, maximum=50000), "€12,000", "12000"),
        (Check("number", minimum=1000), "999", None),
        (Check("number"), "nan", None),
        (Check(), "   ", None),
        (Check(), "anything", "anything"),
    ],
)
def test_answer_validation(check: Check, text: str, value: str | None) -> None:
    assert check.clean(text) == value


def test_the_state_round_trips_through_json() -> None:
    state = BotState("digits", "card", 0.83, {"last4": "1234"}, 1, 2, False, None)
    again = BotState.from_json(json.loads(json.dumps(state.to_json())))
    assert again == state
    assert BotState.from_json({}) == BotState()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"slots": {"a": 1}}, "slots"),
        ({"step": 3}, "step"),
        ({"fallbacks": "2"}, "fallbacks"),
        ({"confidence": "high"}, "confidence"),
    ],
)
def test_a_corrupt_state_names_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BotState.from_json(raw)


# -- any sequence of inputs ---------------------------------------------------------------

VALUES = ["card", "loans", "person", "loans-fb", "nonsense"]
INPUT = st.tuples(
    st.sampled_from(["say", "press", "escalate"]),
    st.text(max_size=12) | st.sampled_from(["1234", "0000", "12", "Card", "tarjeta", "50"]),
    st.none() | st.sampled_from(VALUES),
    st.sampled_from([None, "card", "loan", "amount", "unknown"]),
    st.floats(0, 1),
)


@settings(max_examples=300, deadline=None)
@given(
    inputs=st.lists(INPUT, max_size=12),
    locale=st.sampled_from(["en", "es", "de"]),
    after=st.integers(1, 3),
    then=st.sampled_from(["handover", "buttons"]),
)
def test_any_inputs_never_crash_and_every_turn_replies(
    inputs: list[tuple[str, str, str | None, str | None, float]],
    locale: str,
    after: int,
    then: str,
) -> None:
    buttons = (Button(t("Loans"), "loans-fb", intent="loan"),)
    f = flow(fallback=Fallback(t("Sorry?"), after=after, then=then, buttons=buttons))  # type: ignore[arg-type]
    ctx = BotContext(segments=frozenset({"vip"}), scores={"loan": 0.7}, form={"topic": "x"})
    turn = begin(f, locale=locale, context=ctx)
    assert turn.replies
    for kind, text, choice, intent, confidence in inputs:
        if kind == "escalate":
            turn = escalate(f, turn.state, locale=locale)
            assert turn.handover is not None
        else:
            turn = respond(
                f,
                BotState.from_json(json.loads(json.dumps(turn.state.to_json()))),
                text=text,
                choice=choice if kind == "press" else None,
                guess=(intent, confidence),
                locale=locale,
                context=ctx,
            )
        assert turn.replies and all(isinstance(r.text, str) and r.text for r in turn.replies)
        assert not (turn.done and turn.handover is not None)
