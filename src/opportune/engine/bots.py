"""The bots of a running server: every flow of the workspace compiled once, with its intent
matcher trained at start-up, and the turns of a conversation run through them.

>>> from opportune.api.app import EXAMPLE_WORKSPACE
>>> from opportune.workspace import load_workspace
>>> bots = BotRunner(load_workspace(EXAMPLE_WORKSPACE).bot_flows)
>>> bots.has("help-faq"), bots.has("nope")
(True, False)
>>> turn = bots.begin("help-faq", locale="es")
>>> turn = bots.respond("help-faq", turn.state, text="quiero activar mi tarjeta", locale="es")
>>> turn.state.intent, turn.replies[0].payload["buttons"][0]["value"]
('card-activation', 'card')
>>> bots.intent_features(turn.state)["intent:card-activation"]
1.0
"""

from __future__ import annotations

from collections.abc import Mapping

from opportune.core import bot
from opportune.core.bot import BotContext, BotState, BotTurn
from opportune.ml.intents import IntentMatcher
from opportune.workspace.bots import BotFlowDoc


class BotRunner:
    """Compiled flows and their matchers, by flow name."""

    def __init__(self, flows: Mapping[str, BotFlowDoc]) -> None:
        self.flows: dict[str, bot.Flow] = {name: doc.to_core() for name, doc in flows.items()}
        self.matchers = {name: IntentMatcher.for_flow(f) for name, f in self.flows.items()}
        # seconds spent training each flow's matcher at start-up
        self.training_seconds = {n: m.training_seconds for n, m in self.matchers.items()}
        # Only answers validated as numbers are features: a card's last digits are not.
        self.numeric_slots = frozenset(
            step.slot
            for f in self.flows.values()
            for step in f.steps.values()
            if isinstance(step, bot.Ask) and step.check.kind == "number"
        )

    def has(self, flow: str) -> bool:
        return flow in self.flows

    def _flow(self, flow: str) -> bot.Flow:
        found = self.flows.get(flow)
        if found is None:
            raise KeyError(f"unknown bot flow {flow!r}")
        return found

    def begin(self, flow: str, *, locale: str, context: BotContext | None = None) -> BotTurn:
        """The flow's opening turn; ``KeyError`` for a flow the workspace does not have."""
        return bot.begin(self._flow(flow), locale=locale, context=context)

    def respond(
        self,
        flow: str,
        state: BotState,
        *,
        text: str,
        choice: str | None = None,
        locale: str,
        context: BotContext | None = None,
    ) -> BotTurn:
        """The bot's answer to the visitor's words or button, the intent matched here."""
        compiled = self._flow(flow)
        guess = self.matchers[flow].predict(text, locale) if text.strip() else (None, 0.0)
        return bot.respond(
            compiled,
            state,
            text=text,
            choice=choice,
            guess=guess,
            locale=locale,
            context=context,
        )

    def escalate(self, flow: str, state: BotState, *, locale: str) -> BotTurn:
        """The visitor asked for a person."""
        return bot.escalate(self._flow(flow), state, locale=locale)

    def intent_features(self, state: BotState) -> dict[str, float]:
        """What the bot learnt, as routing-model features: the intent (one-hot) and its
        confidence, and the slots asked for as numbers (``slot:amount``)."""
        out: dict[str, float] = {}
        if state.intent is not None:
            out[f"intent:{state.intent}"] = 1.0
            out["intent_confidence"] = round(state.confidence, 4)
        for name, value in state.slots.items():
            if name not in self.numeric_slots:
                continue
            try:
                number = float(value)
            except ValueError:
                continue
            if number == number and abs(number) != float("inf"):
                out[f"slot:{name}"] = number
        return out
