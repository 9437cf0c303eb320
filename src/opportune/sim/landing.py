"""Where a visit starts: the first intent, the landing page, campaign and referrer.

Each draw has its distribution beside it (``*_probs``) for the observer's posterior
(:mod:`opportune.sim.posterior`); a test holds the two together.

>>> from opportune.sim import personas as P
>>> landing_probs("cpc", P.APPLICANT) == {P.PRODUCT: 0.7, P.HOME: 0.3}
True
"""

from __future__ import annotations

import numpy as np

from opportune.sim import personas as P
from opportune.sim.draws import Draws
from opportune.sim.personas import TrafficMix
from opportune.sim.site import ORGANIC, REFERRALS, SOCIAL

_SUPPORT = (P.SUP_DEVICE, P.SUP_TRAVEL, P.SUP_RETURNS)


def start_intent_probs(mix: TrafficMix, channel: str, last: int) -> np.ndarray:
    """The distribution a session draws the first intent from, given the channel and the
    intent the visitor last left with (-1: a first visit, or a first visit on this device)."""
    p = np.zeros(len(P.INTENTS))
    for name, w in mix.persona_mix(channel).items():
        p[P.INTENTS.index(name)] = w
    if last in (-1, P.DONE, P.BROWSER):
        return p
    kept = np.zeros(len(P.INTENTS))
    kept[last if last != P.QUOTED else P.QUOTE_SEEKER] = 1.0
    p = 0.35 * kept + 0.65 * p
    if last in (P.APPLICANT, P.QUOTE_SEEKER, P.QUOTED):
        p *= 0.5  # half of them come back to finish the application
        p[P.APPLICANT] += 0.5
    return p


def draw_landing(d: Draws, channel: str, intent: int) -> tuple[int, str, str | None]:
    """The landing location, the campaign parameters of its URL and the referrer."""
    if channel == "cpc":
        loc = P.PRODUCT if d.u() < 0.7 else P.HOME
        camp = "personal-loan-q4" if loc == P.PRODUCT else "brand"
        return (
            loc,
            (f"utm_source=google&utm_medium=cpc&utm_campaign={camp}&gclid={d.token(20)}"),
            "https://www.google.com/",
        )
    if channel == "email":
        loc = P.PRODUCT if d.u() < 0.5 else P.HOME
        return loc, "utm_source=newsletter&utm_medium=email&utm_campaign=november", None
    if channel == "social":
        src, ref = d.pick(SOCIAL)
        loc = P.PRODUCT if d.u() < 0.4 else P.HOME
        return loc, f"utm_source={src}&utm_medium=social&utm_campaign=autumn", ref
    u = d.u()
    if channel == "organic":
        return _organic(u, intent), "", d.pick(ORGANIC)
    if channel == "referral":
        return (P.PRODUCT if u < 0.6 else P.HOME), "", d.pick(REFERRALS)
    return _direct(u, intent), "", None


def _organic(u: float, intent: int) -> int:
    if intent in _SUPPORT:
        return P.HELP if u < 0.5 else P.SEARCH if u < 0.7 else P.HOME
    if intent in (P.APPLICANT, P.QUOTE_SEEKER):
        return P.PRODUCT if u < 0.7 else P.SEARCH if u < 0.8 else P.HOME
    return P.PRODUCT if u < 0.3 else P.SEARCH if u < 0.4 else P.HOME


def _direct(u: float, intent: int) -> int:
    # Bookmarks and typed addresses say something about why people come.
    if intent == P.APPLICANT:
        return P.APPLY1 if u < 0.3 else P.PRODUCT if u < 0.6 else P.HOME
    if intent in (P.BUYER, *_SUPPORT):
        return P.LOGIN if u < 0.4 else P.HELP if u < 0.5 and intent in _SUPPORT else P.HOME
    return P.LOGIN if u < 0.1 else P.HOME


def landing_probs(channel: str, intent: int) -> dict[int, float]:
    """The distribution :func:`draw_landing` draws the landing location from."""
    support = intent in _SUPPORT
    if channel == "cpc":
        return {P.PRODUCT: 0.7, P.HOME: 0.3}
    if channel == "email":
        return {P.PRODUCT: 0.5, P.HOME: 0.5}
    if channel == "social":
        return {P.PRODUCT: 0.4, P.HOME: 0.6}
    if channel == "organic":
        if support:
            return {P.HELP: 0.5, P.SEARCH: 0.2, P.HOME: 0.3}
        if intent in (P.APPLICANT, P.QUOTE_SEEKER):
            return {P.PRODUCT: 0.7, P.SEARCH: 0.1, P.HOME: 0.2}
        return {P.PRODUCT: 0.3, P.SEARCH: 0.1, P.HOME: 0.6}
    if channel == "referral":
        return {P.PRODUCT: 0.6, P.HOME: 0.4}
    if intent == P.APPLICANT:
        return {P.APPLY1: 0.3, P.PRODUCT: 0.3, P.HOME: 0.4}
    if support:
        return {P.LOGIN: 0.4, P.HELP: 0.1, P.HOME: 0.5}
    if intent == P.BUYER:
        return {P.LOGIN: 0.4, P.HOME: 0.6}
    return {P.LOGIN: 0.1, P.HOME: 0.9}
