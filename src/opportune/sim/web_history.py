"""The web simulator as a history of visits for training: simulated sessions turned into
the :class:`~opportune.ml.outcomes.visits.Visit` s the engine would have begun, and the
examples the bench and the tests train on.

The session row is built by the store's own :func:`~opportune.store.visits.session_row` and
read by its own ``session_facts``, so a simulated visit has the facts a stored one would.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from opportune.core.assignments import merge_assignments
from opportune.core.journey import JourneyEvent, Scalar
from opportune.core.rules import Ruleset
from opportune.core.session import session_id_for
from opportune.engine.enrichment import parse_user_agent
from opportune.ml.outcomes.examples import Examples, examples_from_visits, replay_in_workers
from opportune.ml.outcomes.features import FeatureSpec
from opportune.ml.outcomes.visits import Settle, Visit
from opportune.sim.web import SimSession
from opportune.store.facts import session_facts
from opportune.store.visits import session_row


@dataclass(slots=True)
class _Known:
    """What the pipeline's live state keeps of one simulated visitor between visits."""

    email: str | None = None  # the customer it is linked to (None: anonymous)
    last_at: int = 0
    past: dict[str, int] = field(default_factory=dict)
    assignments: dict[str, list[int]] = field(default_factory=dict)


class SimHistory:
    """Simulated sessions turned into :class:`~opportune.ml.outcomes.visits.Visit` s exactly
    as the engine ingests them and ``store.visits.stored_visits`` reads them back.

    Per batch the server clock is the arrival time and the skew correction is the
    engine's (``ts + received - sentAt``); the session row gets the user agent's device,
    the batch context's locale and time zone and the landing page's UTM and referrer (no
    geo: the simulator sends no geo headers); identify events carry their traits, as the
    live pipeline folds them. What a visitor carries to its next visit (identified or not,
    the end of the visit, outcomes achieved, customer-scope assignments — its own and, once
    identified, its customer's from other devices) comes back from the replay through
    :meth:`settle`.

    ``keep_truth`` stores each session's exact outcome probabilities (the oracle) by
    session id in :attr:`truth`.
    """

    def __init__(self, *, keep_truth: bool = False) -> None:
        self._known: dict[str, _Known] = {}
        self._customers: dict[str, dict[str, list[int]]] = {}  # email -> assignments
        self.keep_truth = keep_truth
        self.truth: dict[str, np.ndarray] = {}
        self.achieved_truth: dict[str, dict[str, int]] = {}

    def visits(self, sessions_in_start_order: Iterable[SimSession]) -> Iterator[Visit]:
        """The sessions as visits; call :meth:`settle` after each before taking the next."""
        for s in sessions_in_start_order:
            yield self.visit(s)

    def _pool(self, email: str, now: int) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self._customers.get(email, {}).items() if v[1] > now}

    def visit(self, s: SimSession) -> Visit:
        """One simulated session as the pipeline would have begun and processed it."""
        known = self._known.setdefault(s.visitor_id, _Known())
        evs: list[JourneyEvent] = []
        merges: list[tuple[int, dict[str, list[int]]]] = []
        link_at: int | None = None
        for b, received in zip(s.batches, s.received_ms, strict=True):
            if link_at is not None:  # merged once the identifying batch is written
                assert s.email is not None
                merges.append((len(evs), self._pool(s.email, link_at)))
                link_at = None
            skew = received - b.sent_at
            for ev in b.events:
                evs.append(
                    JourneyEvent(
                        ev.type,
                        ev.ts + skew,
                        ev.url,
                        ev.name,
                        ev.query,
                        ev.traits if ev.type == "identify" else ev.attributes,
                        ev.id,
                    )
                )
                if ev.type == "identify" and known.email is None and not merges:
                    link_at = received
        sid = session_id_for(s.visitor_id, s.visit_number)
        ctx = s.batches[0].context
        # The engine takes the landing facts from the first page view of the visit's
        # first batch (the batch in which the session starts).
        first = next((e for e in s.batches[0].events if e.type == "page_view"), None)
        row = session_row(
            session_id=sid,
            site_id="",
            visitor_id=s.visitor_id,
            customer_id=None,
            ts=evs[0].ts,
            number=s.visit_number,
            device=parse_user_agent(s.user_agent[:512]),
            locale=ctx.locale,
            timezone=ctx.timezone,
            landing=None if first is None else (first.url, first.referrer),
        )
        facts: dict[str, Scalar] = session_facts(row)
        assignments = {k: list(v) for k, v in known.assignments.items()}
        if known.email is not None:
            facts["identified"] = True
            merge_assignments(assignments, self._pool(known.email, evs[0].ts))
        if self.keep_truth:
            self.truth[sid] = s.probabilities
            self.achieved_truth[sid] = dict(s.achieved_at)
        return Visit(
            session_id=sid,
            visitor_id=s.visitor_id,
            started_at=evs[0].ts,
            visit_number=s.visit_number,
            facts=facts,
            previous_visit_at=known.last_at,
            past_outcomes=dict(known.past),
            assignments=assignments,
            events=evs,
            merges=merges,
            email=s.email if any(e.type == "identify" for e in evs) else known.email,
        )

    def settle(
        self, visit: Visit, achieved: Sequence[str], assignments: dict[str, list[int]]
    ) -> None:
        """What the visitor's live state keeps after ``visit``: called by the replay."""
        known = self._known.setdefault(visit.visitor_id, _Known())
        known.last_at = max(e.ts for e in visit.events)
        known.email = known.email or visit.email
        for name in achieved:
            known.past[name] = known.past.get(name, 0) + 1
        known.assignments = {k: list(v) for k, v in assignments.items()}
        if known.email is not None:
            merge_assignments(self._customers.setdefault(known.email, {}), assignments)


def customer_groups(sessions: Sequence[SimSession]) -> list[int]:
    """For each session, a group number such that visitors sharing a customer (an email,
    e.g. on a second device) share a group: what a worker must see together."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s in sessions:
        if s.email:
            a, b = find(s.visitor_id), find("email:" + s.email)
            if a != b:
                parent[a] = b
    return [zlib.crc32(find(s.visitor_id).encode()) for s in sessions]


def build_sim_examples(
    sessions: Iterable[SimSession],
    ruleset: Ruleset,
    spec: FeatureSpec,
    *,
    history: SimHistory | None = None,
    extra_specs: Sequence[FeatureSpec] = (),
    workers: int = 1,
    progress: bool = False,
    total: int | None = None,
) -> Examples:
    """Examples from simulated sessions (in start order), converted as the engine would
    ingest them and replayed by the same code as stored visits.

    With ``workers`` > 1 (``sessions`` then held in memory), each worker replays the
    visitors of its customer groups, with its own :class:`SimHistory`."""
    if workers <= 1:
        hist = history or SimHistory()
        return examples_from_visits(
            hist.visits(sessions),
            ruleset,
            [spec, *extra_specs],
            settle=hist.settle,
            progress=progress,
            total=total,
        )
    held = list(sessions)
    groups = customer_groups(held)

    def source(k: int, n: int) -> tuple[Iterable[Visit], Settle | None]:
        hist = SimHistory()
        mine = (s for s, g in zip(held, groups, strict=True) if g % n == k)
        return hist.visits(mine), hist.settle

    return replay_in_workers(
        source,
        ruleset,
        [spec, *extra_specs],
        workers=workers,
        progress=progress,
        total=len(held),
    )
