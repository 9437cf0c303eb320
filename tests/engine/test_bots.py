"""The bot runner with the demo bank's flows and their trained matchers: requests resolved
by the bot in English and Spanish, hand-overs with the reason, and the routing features."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.core.bot import BotContext, BotState, BotTurn, Handover
from opportune.engine.bots import BotRunner
from opportune.workspace import load_workspace


@pytest.fixture(scope="module")
def bots() -> BotRunner:
    return BotRunner(load_workspace(EXAMPLE_WORKSPACE).bot_flows)


def talk(bots: BotRunner, flow: str, locale: str, inputs: list[tuple[str, str | None]],
         context: BotContext | None = None) -> list[BotTurn]:  # fmt: skip
    """Begin, then answer each (text, choice), the state through JSON as the server keeps it."""
    turns = [bots.begin(flow, locale=locale, context=context)]
    for text, choice in inputs:
        state = BotState.from_json(json.loads(json.dumps(turns[-1].state.to_json())))
        turns.append(
            bots.respond(flow, state, text=text, choice=choice, locale=locale, context=context)
        )
    return turns


def links(turns: list[BotTurn]) -> list[str]:
    payloads = [r.payload for t in turns for r in t.replies if r.payload]
    return [p["link"]["url"] for p in payloads if "link" in p]


@pytest.mark.parametrize(
    ("locale", "inputs"),
    [
        (
            "en",
            [
                ("hi, my new card came today and I need to activate it", None),
                ("A new card", "card"),
                ("1234", None),
                ("Yes, it's active", "yes"),
            ],
        ),
        (
            "es",  # typed, not pressed: labels match without accents or capitals
            [
                ("hola, quiero activar la tarjeta que me ha llegado", None),
                ("una tarjeta nueva", None),
                ("12 34", None),
                ("si, ya esta activa", None),
            ],
        ),
    ],
)
def test_a_card_activation_is_resolved_by_the_bot(
    bots: BotRunner, locale: str, inputs: list[tuple[str, str | None]]
) -> None:
    turns = talk(bots, "help-faq", locale, inputs)
    assert all(t.handover is None for t in turns)
    assert turns[1].state.intent == "card-activation"
    assert turns[-1].done and turns[-1].state.resolved
    assert turns[-1].state.slots == {"cardLast4": "1234"}
    assert links(turns) == ["/demo/help.html#device"]
    if locale == "es":
        assert turns[-1].replies[0].text.startswith("¡Perfecto")


def test_a_wrong_card_number_is_asked_again_then_accepted(bots: BotRunner) -> None:
    turns = talk(bots, "help-faq", "en", [("activate my card", None), ("", "card"), ("12", None)])
    assert turns[-1].replies[0].text.startswith("That doesn't look like 4 digits")
    assert turns[-1].state.step == "activation-digits" and turns[-1].handover is None


def test_a_travel_notice_collects_destination_and_dates(bots: BotRunner) -> None:
    turns = talk(
        bots,
        "help-faq",
        "es",
        [("me voy de viaje a Japón", None), ("Japón", None), ("del 3 al 17 de junio", None)],
    )
    assert turns[-1].done and turns[-1].state.slots == {
        "destination": "Japón",
        "travelDates": "del 3 al 17 de junio",
    }
    assert links(turns) == ["/demo/account.html"]


def test_a_likely_loan_applicant_goes_to_an_adviser_with_the_intent(bots: BotRunner) -> None:
    hot = BotContext(scores={"loan_submitted": 0.8})
    turns = talk(bots, "help-faq", "en", [("I want to apply for a loan", None)], hot)
    assert turns[-1].handover == Handover("loans", "intent loan-help")
    cold = talk(bots, "help-faq", "en", [("I want to apply for a loan", None)])
    assert cold[-1].handover is None and cold[-1].state.step == "loan-next"


def test_the_loan_chat_hands_over_at_once_for_something_else(bots: BotRunner) -> None:
    form = BotContext(form={"topic": "Something else"})
    first = bots.begin("loan-help", locale="en", context=form)
    assert first.handover is not None and first.handover.queue == "loans"
    asks = bots.begin("loan-help", locale="en", context=BotContext(form={"topic": "Documents"}))
    assert asks.handover is None and asks.replies[0].payload is not None


def test_a_large_loan_amount_is_handed_over_with_the_amount_as_a_feature(
    bots: BotRunner,
) -> None:
    turns = talk(bots, "loan-help", "en", [("how much can I borrow?", None), ("40,000", None)])
    assert turns[-1].handover == Handover("loans", "a loan over 25,000 euros")
    features = bots.intent_features(turns[-1].state)
    assert features["intent:loan-amount"] == 1.0 and features["slot:amount"] == 40000.0
    card = BotState(intent="card-activation", confidence=0.8, slots={"cardLast4": "1234"})
    assert bots.intent_features(card) == {"intent:card-activation": 1.0, "intent_confidence": 0.8}
    assert 0.45 <= features["intent_confidence"] <= 1.0


def test_talk_to_a_person_and_escalate(bots: BotRunner) -> None:
    turns = talk(bots, "help-faq", "es", [("quiero hablar con una persona", None), ("", "loans")])
    assert turns[1].state.intent == "talk-to-person"
    assert turns[-1].handover == Handover("loans", "intent talk-to-person")
    state = talk(bots, "help-faq", "en", [("activate my card", None)])[-1].state
    assert bots.escalate("help-faq", state, locale="en").handover == Handover(
        "support", "asked for a person (intent card-activation)"
    )
    with pytest.raises(KeyError, match="unknown bot flow 'nope'"):
        bots.begin("nope", locale="en")


def test_nonsense_twice_offers_the_topics(bots: BotRunner) -> None:
    nonsense = ["qwerty zxcv", "I like turtles"]
    assert all(bots.matchers["help-faq"].predict(t, "en")[1] < 0.45 for t in nonsense)
    turns = talk(bots, "help-faq", "en", [(t, None) for t in nonsense])
    assert turns[1].replies[0].text.startswith("Sorry") and turns[1].handover is None
    assert [b["value"] for b in turns[2].replies[0].payload["buttons"]] == [  # type: ignore[index]
        "card-activation",
        "travel-notice",
        "loan-help",
        "handover",
    ]
    assert bots.intent_features(turns[2].state) == {}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flow=st.sampled_from(["help-faq", "loan-help"]),
    locale=st.sampled_from(["en", "es"]),
    inputs=st.lists(
        st.tuples(
            st.text(max_size=30)
            | st.sampled_from(["activate my card", "1234", "préstamo", "50000", "Yes, thanks"]),
            st.none() | st.sampled_from(["card", "yes", "no", "self", "adviser", "handover"]),
        ),
        max_size=8,
    ),
)
def test_any_conversation_with_the_demo_flows_always_answers(
    bots: BotRunner, flow: str, locale: str, inputs: list[tuple[str, str | None]]
) -> None:
    for turn in talk(bots, flow, locale, inputs, BotContext(form={"topic": "Documents"})):
        assert turn.replies and all(r.text for r in turn.replies)
