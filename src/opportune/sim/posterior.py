"""The best any model could do: outcome probabilities given only what the server sees.

``SimSession.probabilities`` knows the visitor's hidden state, intent included, which no
event shows; its ROC AUC is a ceiling no model can reach. This module computes the other
ceiling, the one a model can approach: the exact Bayes posterior of each outcome given the
events so far (and the visitor's earlier visits), by a forward filter over the hidden chain
of :mod:`opportune.sim.personas`.

The filter follows the steps the simulator recorded (``SimSession.steps``): each step's
action kind and location are what its events show, and the evidence of intent it rendered
(search queries, help articles, in-page clicks) is weighed by how likely each intent was to
render it. Where the first event of a step does not yet tell which action it is (a form
abandoned as the visitor leaves or navigates away; a click on the form's button that may turn
into a form error, a rage burst or the submission; a click on a page's rage target that may
be an ordinary click), the probability at that event mixes the candidate actions, weighed by
how likely each is to show that event. Within a step, events before its evidence do not see
it. What this leaves to the observer is still a little more than the events say (a click's
destination page is known at the click; dwell times are not used because they carry no
intent), so the figure is a ceiling, not an estimate. See ``docs/simulator.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Final

import numpy as np

from opportune.sim import personas as P
from opportune.sim.landing import landing_probs, start_intent_probs
from opportune.sim.personas import OUTCOMES, TrafficMix, chain
from opportune.sim.rendering import Step
from opportune.sim.site import (
    ALL_INTEREST,
    ALL_QUERIES,
    ARTICLES,
    HELP_ARTICLES,
    INTEREST,
    QUERIES,
    RAGE_TARGETS,
)
from opportune.sim.web import SimSession

N_KINDS: Final = P.LOGIN_ERROR + 1
FORM: Final = (P.APPLY1, P.APPLY2, P.APPLY3)
OUTCOME_OF_KIND: Final = {
    P.SUBMIT: P.LOAN,
    P.QUOTE_ACT: P.QUOTE,
    P.BOOK: P.DEMO,
    P.PURCHASE_ACT: P.PURCHASE,
}
FORM_ABANDONED_ON_EXIT: Final = 0.85  # web.WebSimulator._simulate (an exit from the form)
FORM_ABANDONED_ON_GO: Final = 0.8  # rendering._go
INTEREST_CLICK: Final = 0.45  # a STAY step outside the form clicks something of interest


@dataclass(frozen=True, slots=True)
class Kernel:
    """One device class's chain as matrices: transition mass by action kind, leaving, values."""

    by_kind: np.ndarray  # (N_KINDS, N, N): P(action of that kind, next state | state)
    exit: np.ndarray  # (N,): P(leave | state)
    value: np.ndarray  # (N, len(OUTCOMES)): P(outcome later | state)
    loc_of: np.ndarray  # (N,)
    intent_of: np.ndarray  # (N,)


@cache
def kernel(device: str) -> Kernel:
    ch = chain(device)
    n = P.N_STATES
    by_kind = np.zeros((N_KINDS, n, n))
    leave = np.zeros(n)
    for s, acts in enumerate(ch.actions):
        for a in acts:
            if a.kind == P.EXIT:
                leave[s] += a.prob
            else:
                by_kind[a.kind, s, a.next] += a.prob
    parts = [P.state_parts(s) for s in range(n)]
    return Kernel(
        by_kind,
        leave,
        ch.value,
        np.array([p[1] for p in parts]),
        np.array([p[0] for p in parts]),
    )


def _share(x: str, seq: tuple[str, ...]) -> float:
    return seq.count(x) / len(seq)


@cache
def evidence_likelihood(kind: str, value: str) -> np.ndarray:
    """P(the step rendered ``value`` | post-step intent), per intent, as the simulator draws."""
    out = np.zeros(len(P.INTENTS))
    for i in range(len(P.INTENTS)):
        if kind == "landing_query":
            out[i] = _share(value, QUERIES[i])
        elif kind == "query":
            out[i] = 0.8 * _share(value, QUERIES[i]) + 0.2 * _share(value, ALL_QUERIES)
        elif kind == "article":
            out[i] = 0.8 * _share(value, ARTICLES[i]) + 0.2 * _share(value, tuple(HELP_ARTICLES))
        elif kind == "interest":
            out[i] = 0.75 * _share(value, INTEREST[i]) + 0.25 * _share(value, ALL_INTEREST)
        else:
            raise ValueError(f"unknown evidence kind {kind!r}")
    return out


class _Filter:
    """The posterior over hidden states of one session, step by step."""

    def __init__(self, k: Kernel, alpha: np.ndarray) -> None:
        self.k = k
        self.alpha = alpha

    def _moved(self, kind: int) -> np.ndarray:
        """Unnormalised mass over next states for an action of ``kind`` from here."""
        idx = np.flatnonzero(self.alpha)
        return self.alpha[idx] @ self.k.by_kind[kind][idx]

    def _lik(self, evidence: tuple[str, str] | None) -> np.ndarray | float:
        if evidence is None:
            return 1.0
        return evidence_likelihood(*evidence)[self.k.intent_of]

    def advance(self, step: Step) -> tuple[np.ndarray, np.ndarray]:
        """Move the posterior through ``step``; return the outcome probabilities before and
        after its evidence is seen."""
        mass = self._moved(step.kind) * (self.k.loc_of == step.loc)
        total = mass.sum()
        if total <= 0:
            raise ValueError(f"step {step} is impossible under the chain (a simulator change?)")
        before = (mass / total) @ self.k.value
        mass = mass * self._lik(step.evidence)
        self.alpha = mass / mass.sum()
        return before, self.alpha @ self.k.value

    def mixed(self, candidates: dict[int, np.ndarray | float]) -> np.ndarray:
        """Outcome probabilities at an event that several action kinds could be showing;
        ``candidates`` maps each kind to P(that event | kind, next state)."""
        num = np.zeros(len(OUTCOMES))
        z = 0.0
        for kind, weight in candidates.items():
            if kind == P.EXIT:
                z += float(weight) * float(self.alpha @ self.k.exit)
                continue
            mass = self._moved(kind) * weight
            m = float(mass.sum())
            z += m
            num += mass @ self.k.value
            if kind in OUTCOME_OF_KIND:
                num[OUTCOME_OF_KIND[kind]] += m  # the achievement follows within the step
        return num / z if z > 0 else num

    def leave(self) -> np.ndarray:
        """The intent the visitor leaves with, given that the session ended here."""
        w = self.alpha * self.k.exit
        out = np.bincount(self.k.intent_of, weights=w, minlength=len(P.INTENTS))
        return out / out.sum()


def _ambiguous(
    f: _Filter, loc: int, event_type: str, name: str | None
) -> dict[int, np.ndarray | float] | None:
    """The candidate kinds when the step's first event could be showing several, or None."""
    if event_type == "form_abandoned":
        return {P.EXIT: FORM_ABANDONED_ON_EXIT, P.GO: FORM_ABANDONED_ON_GO}
    if event_type != "click" or name != RAGE_TARGETS.get(loc):
        return None
    if loc in FORM:  # the form's own button: next step, an error, the submission or a rage
        return {P.NEXT: 1.0, P.ERROR: 1.0, P.SUBMIT: 1.0, P.RAGE: 1.0}
    lik = f._lik(("interest", name))
    return {P.RAGE: 1.0, P.STAY: INTEREST_CLICK * lik}


def observable_probabilities(
    sessions: Iterable[SimSession], mix: TrafficMix | None = None
) -> list[np.ndarray]:
    """Per session (in generation order, so earlier visits of a visitor come first), the
    probability of each outcome after each event given what the server has seen: the same
    shape as ``SimSession.probabilities``."""
    mix = mix or TrafficMix()
    left_with: dict[str, np.ndarray] = {}  # visitor id -> intent posterior at the last exit
    frustration = np.zeros(P.FRUSTRATION_LEVELS)
    frustration[0], frustration[1] = 1 - mix.frustrated_start, mix.frustrated_start
    out: list[np.ndarray] = []
    for s in sessions:
        if not s.steps:
            raise ValueError(f"session {s.visitor_id}.{s.visit_number} has no recorded steps")
        k = kernel(s.device)
        events = s.events
        probs = np.zeros((len(events), len(OUTCOMES)))
        first = s.steps[0]
        previous = left_with.get(s.visitor_id) if s.visit_number > 1 else None
        intents = np.zeros(len(P.INTENTS))
        if previous is None:
            intents = start_intent_probs(mix, s.channel, -1)
        else:
            for last, w in enumerate(previous):
                if w > 0:
                    intents += w * start_intent_probs(mix, s.channel, last)
        alpha = np.zeros(P.N_STATES)
        for i in range(len(P.INTENTS)):
            land = 1.0 if s.second_device else landing_probs(s.channel, i)
            p_loc = land if isinstance(land, float) else land.get(first.loc, 0.0)
            for fr in range(P.FRUSTRATION_LEVELS):
                alpha[P.state_index(i, first.loc, fr)] = intents[i] * p_loc * frustration[fr]
        f = _Filter(k, alpha)
        before = f.alpha @ k.value / f.alpha.sum()
        f.alpha = f.alpha * f._lik(first.evidence)
        f.alpha /= f.alpha.sum()
        after = f.alpha @ k.value
        bounds = [st.start for st in s.steps[1:]] + [len(events)]
        probs[first.start : bounds[0]] = after
        probs[first.start : first.evidence_at] = before
        loc = first.loc
        for st, end in zip(s.steps[1:], bounds[1:], strict=True):
            if st.kind == P.EXIT:
                if st.start < end:  # the form abandoned as the visitor left
                    ev = events[st.start]
                    probs[st.start : end] = f.mixed(_ambiguous(f, loc, ev.type, ev.name) or {})
                left_with[s.visitor_id] = f.leave()
                break
            ev = events[st.start]
            candidates = _ambiguous(f, loc, ev.type, ev.name)
            at_first = f.mixed(candidates) if candidates else None
            before, after = f.advance(st)
            probs[st.start : end] = after
            probs[st.start : st.evidence_at] = before
            if st.kind in OUTCOME_OF_KIND:  # the click that makes the outcome: it follows
                won = OUTCOME_OF_KIND[st.kind]
                probs[st.start : s.achieved_at[OUTCOMES[won]], won] = 1.0
            if at_first is not None:
                probs[st.start] = at_first
            loc = st.loc
        else:
            raise ValueError(f"session {s.visitor_id}.{s.visit_number} does not end")
        out.append(probs)
    return out
