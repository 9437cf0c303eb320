"""The renderer of events: one session's chain steps as the events the snippet would send.

A :class:`Recorder` collects a session's events with the exact outcome probabilities and
the hidden state beside each one; :func:`render` writes the events of one chain action;
:func:`snippet_batches` groups them into batches as the browser snippet does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import quote_plus

from opportune.core.events import Batch, Context, Event, Identity
from opportune.sim import personas as P
from opportune.sim.draws import Draws
from opportune.sim.personas import OUTCOMES
from opportune.sim.site import (
    ALL_INTEREST,
    ALL_QUERIES,
    ARTICLES,
    FORM_FIELDS,
    HELP_ARTICLES,
    INTEREST,
    PAGES,
    QUERIES,
    RAGE_TARGETS,
    VIEWPORTS,
)

if TYPE_CHECKING:
    from opportune.sim.web import Visitor

FLUSH_MS: Final = 1000  # the snippet's flushIntervalMs
BATCH_SIZE: Final = 10  # the snippet's batchSize
START_STEP: Final = -2  # the landing (or a second device's sign-in): no chain step before it

Row = tuple[float, ...]


class Step(NamedTuple):
    """One step of the hidden chain as the events show it, for the observer's posterior
    (:mod:`opportune.sim.posterior`): the action ``kind`` (``START`` for the landing), the
    location after it, the index of its first event, and the evidence of intent it rendered
    (a search query, a help article, an in-page click) with the index of that event."""

    kind: int
    loc: int
    start: int
    evidence_at: int
    evidence: tuple[str, str] | None


class Recorder:
    """One session's events so far, with the truth beside each event."""

    def __init__(
        self,
        draws: Draws,
        origin: str,
        v: Visitor,
        start_ms: int,
        session_no: int,
        new_email: Callable[[], str],
    ) -> None:
        self.d = draws
        self.origin = origin
        self.v = v
        self.new_email = new_email
        self.t = start_ms  # server clock
        self.prefix = f"{v.id}.{session_no}."
        self.events: list[tuple[int, dict[str, Any]]] = []  # (server ms, fields)
        self.rows: list[Row] = []
        self.states: list[int] = []
        self.achieved: dict[str, int] = {}
        self.depth = 0
        self.seen_view = False
        self.url = ""
        self.steps: list[Step] = []
        self.evidence: tuple[str, str] | None = None  # of the step being rendered
        self.evidence_at = 0

    def step(self, kind: int, loc: int, start: int) -> None:
        """Record the step whose events begin at ``start`` (and its evidence, if any)."""
        ev, at = self.evidence, self.evidence_at
        self.steps.append(Step(kind, loc, start, at if ev else start, ev))
        self.evidence = None

    def emit(self, row: Row, state: int, gap_ms: int, **fields: Any) -> None:
        self.t += gap_ms
        self.events.append((self.t, fields))
        self.rows.append(row)
        self.states.append(state)

    def page(
        self,
        loc: int,
        row: Row,
        state: int,
        intent: int,
        *,
        gap_ms: int,
        query: str = "",
        referrer: str | None = None,
    ) -> None:
        """A page view of ``loc`` (and the search it runs, on the search page)."""
        path, title = PAGES[loc]
        url = self.origin + path
        d = self.d
        if loc == P.SEARCH:
            q = d.pick(QUERIES[intent]) if d.u() < 0.8 else d.pick(ALL_QUERIES)
            self.evidence = ("landing_query", query) if query else ("query", q)
            self.evidence_at = len(self.events)
            query = query or q
            url += "?q=" + quote_plus(query)
        elif loc == P.HELP:
            art = d.pick(ARTICLES[intent]) if d.u() < 0.8 else d.pick(tuple(HELP_ARTICLES))
            self.evidence = ("article", art)
            self.evidence_at = len(self.events)
            url += "?article=" + art
            title = f"{HELP_ARTICLES[art]} · {title}"
        elif loc == P.CONFIRMATION:
            url += "?ref=OB-" + d.token(6).upper()
        fields: dict[str, Any] = {"type": "page_view", "url": url, "title": title}
        if referrer:
            fields["referrer"] = referrer
        self.emit(row, state, gap_ms, **fields)
        self.url = url
        self.depth = 0
        self.seen_view = False
        if loc == P.SEARCH:
            self.emit(row, state, 40, type="search", url=url, query=query)

    def form_abandoned(self, row: Row, state: int, gap_ms: int) -> None:
        """The loan form left with some inputs filled in."""
        inputs = 1 + int(self.d.u() * 8)
        self.emit(
            row,
            state,
            gap_ms,
            type="form_abandoned",
            url=self.url,
            name="loan",
            attributes={"inputs": inputs},
        )

    def sign_in(self, row: Row, state: int, intent: int, dwell_ms: float) -> None:
        """The login form sent, the visitor identified, then the account page."""
        assert self.v.email is not None
        self.emit(
            row,
            state,
            self.d.dwell(dwell_ms),
            type="form_submitted",
            url=self.url,
            name="login",
            attributes={"fields": 3},
        )
        self.emit(row, state, 5, type="identify", identity=Identity(email=self.v.email))
        self.page(P.ACCOUNT, row, state, intent, gap_ms=self.d.dwell(700, 0.3, 200))


def render(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    """The events of chain action ``a`` taken in state ``s`` (``row``: the truth after it)."""
    _RENDERERS[a.kind](rec, s, a, row)


def _go(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    d, loc, f = rec.d, *P.state_parts(s)[1:]
    ni, nloc, _ = P.state_parts(a.next)
    gap = d.dwell(22_000 * (1 + 0.15 * f))
    if P.APPLY1 <= loc <= P.APPLY3 and d.u() < 0.8:
        rec.form_abandoned(row, a.next, gap)
        gap = 0
    if d.u() < 0.6 and nloc != P.SEARCH:
        name = PAGES[nloc][1].split(" · ")[0]
        href = rec.origin + PAGES[nloc][0]
        rec.emit(row, a.next, gap, type="click", url=rec.url, name=name, attributes={"href": href})
        gap = d.dwell(600, 0.4, 100)
    rec.page(nloc, row, a.next, ni, gap_ms=gap)


def _stay(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    d, url, loc = rec.d, rec.url, P.state_parts(s)[1]
    gap = d.dwell(7000)
    if d.u() < 0.45 and not P.APPLY1 <= loc <= P.APPLY3:
        ni = P.state_parts(a.next)[0]
        name = d.pick(INTEREST[ni]) if d.u() < 0.75 else d.pick(ALL_INTEREST)
        rec.evidence, rec.evidence_at = ("interest", name), len(rec.events)
        rec.emit(row, a.next, gap, type="click", url=url, name=name)
    elif loc in VIEWPORTS and not rec.seen_view and d.u() < 0.5:
        rec.seen_view = True
        rec.emit(row, a.next, gap, type="viewport", url=url, name=VIEWPORTS[loc])
    elif rec.depth < 100:
        rec.depth += 25
        depth = rec.depth
        rec.emit(
            row, a.next, gap, type="scroll", url=url, name=f"{depth}%", attributes={"depth": depth}
        )
    else:
        rates = {"href": url.split("#")[0] + "#rates"}
        rec.emit(row, a.next, gap, type="click", url=url, name="See rates", attributes=rates)


def _idle(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    gap = 30_000 + rec.d.dwell(3000, 0.5, 100)
    rec.emit(row, a.next, gap, type="idle", url=rec.url, attributes={"seconds": 30})


def _rage(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    d, name = rec.d, RAGE_TARGETS[P.state_parts(s)[1]]
    gap = d.dwell(4000)
    for _ in range(3 + int(d.u() * 4)):
        rec.emit(row, a.next, gap, type="click", url=rec.url, name=name)
        gap = 120 + int(d.u() * 180)


def _form_step(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    """A click on the application form's button; with ``ERROR``, the errors it shows."""
    d, step = rec.d, P.state_parts(s)[1] - P.APPLY1
    button = "Submit application" if step == 2 else "Continue"
    gap = d.dwell(20_000 * (1 + step * 0.5))
    rec.emit(row, a.next, gap, type="click", url=rec.url, name=button)
    if a.kind != P.ERROR:
        return
    fields = FORM_FIELDS[step]
    for i in range(1 + int(d.u() * min(3, len(fields)))):
        fld, msg = fields[(i + int(d.u() * len(fields))) % len(fields)]
        attrs: dict[str, Any] = {"field": fld}
        if msg:
            attrs["message"] = msg
        else:
            attrs["reason"] = "valueMissing"
        rec.emit(row, a.next, 30, type="form_error", url=rec.url, name="loan", attributes=attrs)


def _submit(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    d, v = rec.d, rec.v
    ni = P.state_parts(a.next)[0]
    _outcome(rec, a, row, P.LOAN, d.dwell(25_000), "Submit application")
    v.email = v.email or rec.new_email()
    traits = {"firstName": v.email.split(".")[0].title()}
    rec.emit(row, a.next, 5, type="identify", identity=Identity(email=v.email), traits=traits)
    rec.emit(
        row, a.next, 5, type="form_submitted", url=rec.url, name="loan", attributes={"fields": 9}
    )
    rec.page(P.CONFIRMATION, row, a.next, ni, gap_ms=d.dwell(900, 0.3, 200))


def _quote(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    _outcome(rec, a, row, P.QUOTE, rec.d.dwell(30_000), "Get my quote")


def _book(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    _outcome(rec, a, row, P.DEMO, rec.d.dwell(30_000), "Book a call with an adviser")


def _purchase(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    _outcome(rec, a, row, P.PURCHASE, rec.d.dwell(25_000), "Order the travel card")


def _signin(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    rec.v.email = rec.v.email or rec.new_email()
    rec.sign_in(row, a.next, P.state_parts(a.next)[0], 12_000)


def _login_error(rec: Recorder, s: int, a: P.Action, row: Row) -> None:
    d = rec.d
    fld, reason = ("password", "tooShort") if d.u() < 0.6 else ("email", "typeMismatch")
    rec.emit(
        row,
        a.next,
        d.dwell(10_000),
        type="form_error",
        url=rec.url,
        name="login",
        attributes={"field": fld, "reason": reason},
    )


def _outcome(rec: Recorder, a: P.Action, row: Row, k: int, gap: int, button: str) -> None:
    """The click that makes an outcome (certain to follow: probability 1), then the event."""
    sure = tuple(1.0 if i == k else p for i, p in enumerate(row))
    rec.emit(sure, a.next, gap, type="click", url=rec.url, name=button)
    attrs = _outcome_attributes(rec.d, k)
    rec.achieved[OUTCOMES[k]] = len(rec.events)
    rec.emit(
        row,
        a.next,
        400 + int(rec.d.u() * 400),
        type="custom",
        url=rec.url,
        name=OUTCOMES[k],
        attributes=attrs,
    )


def _outcome_attributes(d: Draws, k: int) -> dict[str, Any]:
    """What the custom event of outcome ``k`` carries: amounts, products, its value."""
    if k == P.LOAN:
        amount = int(round(min(50_000, 1000 + 9000 * math.exp(0.7 * d.normal())), -2))
        return {
            "amount": amount,
            "termMonths": d.pick((24, 36, 48, 60, 84)),
            "purpose": d.pick(("car", "home", "education", "other")),
            "value": amount,
        }
    if k == P.QUOTE:
        amount = int(round(min(50_000, 1000 + 8000 * math.exp(0.7 * d.normal())), -2))
        return {"amount": amount, "termMonths": d.pick((24, 36, 48, 60)), "value": amount}
    if k == P.DEMO:
        return {"topic": d.pick(("mortgage", "business account", "investments")), "value": 250}
    product, value = d.pick((("travel_card", 35), ("premium_card", 120), ("saver", 0)))
    if product == "saver":
        value = int(round(500 * math.exp(1.2 + 0.8 * d.normal()), -1))
    return {"product": product, "value": value}


_RENDERERS: Final[dict[int, Callable[[Recorder, int, P.Action, Row], None]]] = {
    P.GO: _go,
    P.STAY: _stay,
    P.IDLE: _idle,
    P.RAGE: _rage,
    P.NEXT: _form_step,
    P.ERROR: _form_step,
    P.SUBMIT: _submit,
    P.QUOTE_ACT: _quote,
    P.BOOK: _book,
    P.PURCHASE_ACT: _purchase,
    P.SIGNIN: _signin,
    P.LOGIN_ERROR: _login_error,
}


def snippet_batches(
    site_key: str, v: Visitor, events: list[Event], server_ts: list[int], draws: Draws
) -> tuple[list[Batch], list[int]]:
    """Group events as the snippet does: flush 1 s after the first queued event, at 10
    events, or at once after identify (and at unload, which the next page view implies).
    Returns the batches and their server arrival times."""
    ctx = Context(
        locale=v.locale, timezone=v.timezone, screen_width=v.screen[0], screen_height=v.screen[1]
    )
    batches: list[Batch] = []
    received: list[int] = []
    i, n = 0, len(events)
    while i < n:
        j = i + 1
        first = server_ts[i]
        while (
            j < n
            and j - i < BATCH_SIZE
            and events[j - 1].type != "identify"
            and server_ts[j] <= first + FLUSH_MS
        ):
            j += 1
        if j - i == BATCH_SIZE or events[j - 1].type == "identify":
            sent = server_ts[j - 1]
        else:
            sent = first + FLUSH_MS if j == n else min(first + FLUSH_MS, server_ts[j])
        sent = max(sent, server_ts[j - 1])
        batches.append(
            Batch(
                site_key=site_key,
                visitor_id=v.id,
                sent_at=sent + v.clock_skew_ms,
                events=events[i:j],
                context=ctx,
            )
        )
        # One request at a time, as the snippet does: a batch arrives after the one before it.
        arrival = sent + 20 + int(draws.u() * 180)
        received.append(max(arrival, received[-1] + 1) if received else arrival)
        i = j
    return batches, received
