"""A site's rules compiled for the live pipeline: which segments a visitor is in, which
outcomes a visit achieved, re-evaluated per event with work proportional to what changed.

Per event (:meth:`Ruleset.step`): the journey is folded; only the journey-pattern
accumulators whose filters can match this event type are updated; and only the rules that
can have changed are evaluated — those reading this event type, those that time alone can
change (windows, time on page), and those reading a segment that just changed. Segments
run in dependency order, so a segment built on another sees its new state.

:func:`evaluate_history` is the same definition evaluated from scratch over a whole list
of events: the reference for the incremental path, and the audience estimator.

>>> from opportune.core.conditions import Context, parse_condition
>>> from opportune.core.segments import Segment
>>> searchers = Segment("searchers", parse_condition({"event": {"type": "search"}}))
>>> history = [JourneyEvent("search", 1_000, query="travel alert")]
>>> sorted(evaluate_history(Ruleset([searchers], []), history, Context({}, 1, 0)).segments)
['searchers']
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opportune.core.conditions import (
    Context,
    Node,
    references,
    scored_outcomes,
    stateful_nodes,
)
from opportune.core.journey import Journey, JourneyEvent, fold
from opportune.core.outcomes import Outcome
from opportune.core.pages import PageGroup, PageGroups
from opportune.core.segments import Segment

DAY_MS = 86_400_000
log = logging.getLogger(__name__)

# Scores a journey in place (journey.scores), given its current segments and the time.
Scorer = Callable[[Journey, Mapping[str, int], int], None]


class RulesError(ValueError):
    """Rules that cannot work together: each problem names the rule and the reason."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems  # (kind, name, message)
        super().__init__("; ".join(f"{k} {n!r}: {m}" for k, n, m in problems))


@dataclass(slots=True)
class Changes:
    """What one event changed: facts to store and to report."""

    entered: list[tuple[str, int]] = field(default_factory=list)  # session scope
    left: list[tuple[str, int]] = field(default_factory=list)
    assigned: list[tuple[str, int, int]] = field(default_factory=list)  # name, since, expires
    achieved: list[tuple[str, int, float | None]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # rule, message

    def __bool__(self) -> bool:
        return bool(self.entered or self.left or self.assigned or self.achieved or self.errors)


class _Members(Mapping[str, bool]):
    """Segment membership as conditions see it: in the segment this visit, or assigned."""

    __slots__ = ("assignments", "journey", "now")

    def __init__(self, journey: Journey, assignments: Mapping[str, list[int]], now: int) -> None:
        self.journey = journey
        self.assignments = assignments
        self.now = now

    def get(self, name: str, default: Any = False) -> Any:
        if name in self.journey.segments:
            return True
        a = self.assignments.get(name)
        return a is not None and a[1] > self.now

    def __getitem__(self, name: str) -> bool:
        return bool(self.get(name))

    def __iter__(self) -> Iterator[str]:
        return iter({*self.journey.segments, *self.assignments})

    def __len__(self) -> int:
        return len({*self.journey.segments, *self.assignments})


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    condition: Node
    refs: frozenset[str]
    segment: Segment | None = None
    outcome: Outcome | None = None


class Ruleset:
    """Segments and outcomes of a workspace, validated together and ordered for evaluation."""

    def __init__(
        self,
        segments: Sequence[Segment] = (),
        outcomes: Sequence[Outcome] = (),
        *,
        page_groups: Sequence[PageGroup] = (),
        triggers: Sequence[Node] = (),
        fingerprint: str | None = None,
    ) -> None:
        """``triggers``: other conditions read from the journey (action-map triggers) whose
        journey patterns must be kept up to date with the rules'."""
        self.pages = PageGroups(page_groups)
        problems: list[tuple[str, str, str]] = []
        by_name: dict[str, Segment] = {}
        for s in segments:
            if s.name in by_name:
                problems.append(("segment", s.name, "defined twice"))
            by_name[s.name] = s
        seen_outcomes: set[str] = set()
        for o in outcomes:
            if o.name in seen_outcomes:
                problems.append(("outcome", o.name, "defined twice"))
            seen_outcomes.add(o.name)
        for kind, name, node in [
            *(("segment", s.name, s.condition) for s in segments),
            *(("outcome", o.name, o.condition) for o in outcomes),
        ]:
            for ref in sorted(references(node) - set(by_name)):
                problems.append((kind, name, f"refers to unknown segment {ref!r}"))
            for ref in sorted(scored_outcomes(node) - seen_outcomes):
                problems.append((kind, name, f"reads the score of unknown outcome {ref!r}"))
        order = _topological(by_name, problems)
        if problems:
            raise RulesError(problems)
        self.segments: list[_Rule] = [
            _Rule(s.name, s.condition, frozenset(references(s.condition)), segment=s)
            for s in (by_name[n] for n in order)
        ]
        self.outcomes: list[_Rule] = [
            _Rule(o.name, o.condition, frozenset(references(o.condition)), outcome=o)
            for o in outcomes
        ]
        self.segment_by_name = by_name
        # Session segments by evaluation order: members() lists a visit's few segments in
        # that order without walking every rule.
        self._session_rank = {
            r.name: i for i, r in enumerate(self.segments) if by_name[r.name].scope == "session"
        }
        self.outcome_by_name = {o.name: o for o in outcomes}
        nodes: dict[str, Node] = {}
        for cond in [*(r.condition for r in [*self.segments, *self.outcomes]), *triggers]:
            for n in stateful_nodes(cond):
                nodes.setdefault(n.key, n)
        self.stateful = list(nodes.values())
        self._any_type = [n for n in self.stateful if n.types is None]
        self._by_type: dict[str, list[Node]] = {}
        for n in self.stateful:
            for t in n.types or ():
                self._by_type.setdefault(t, []).append(n)
        # Per event type, the rules that may change, in evaluation order, each with whether
        # it must run (it reads this type, any type, or the clock) or only if a segment it
        # reads changed: a rule reading none of that is never even looked at.
        self._plan_cache: dict[str, tuple[list[tuple[_Rule, bool]], list[tuple[_Rule, bool]]]]
        self._plan_cache = {}
        # After a rebuild every rule runs: the same plans with every rule a must.
        self._full_plan = ([(r, True) for r in self.segments], [(r, True) for r in self.outcomes])
        self.fingerprint = (
            fingerprint
            or hashlib.blake2b(",".join(sorted(nodes)).encode(), digest_size=8).hexdigest()
        )

    def __len__(self) -> int:
        return len(self.segments) + len(self.outcomes)

    def _plan(self, etype: str) -> tuple[list[tuple[_Rule, bool]], list[tuple[_Rule, bool]]]:
        plan = self._plan_cache.get(etype)
        if plan is None:

            def pick(rules: list[_Rule]) -> list[tuple[_Rule, bool]]:
                out = []
                for r in rules:
                    c = r.condition
                    must = c.timed or c.types is None or etype in c.types
                    if must or r.refs:
                        out.append((r, must))
                return out

            plan = self._plan_cache[etype] = (pick(self.segments), pick(self.outcomes))
        return plan

    def __bool__(self) -> bool:
        """Whether there is anything to keep or evaluate (rules, or triggers' patterns)."""
        return bool(self.segments or self.outcomes or self.stateful)

    def step(
        self,
        journey: Journey,
        event: JourneyEvent,
        now: int,
        assignments: dict[str, list[int]],
        scorer: Scorer | None = None,
    ) -> Changes:
        """Fold ``event`` into ``journey`` and re-evaluate what it can have changed.

        ``assignments`` (customer-scope segment -> [since, expires at]) is updated in place.
        ``scorer``, if given, is called after the fold and before the rules, with the
        segments the visitor is in before this event's evaluation, so that rules can read
        the new scores (outcome models run here; training records its features here, so
        both see the same state at the same moment).
        """
        fold(journey, event)
        etype = event.type
        if etype == "page_view":
            for g in self.pages.of(event.url):
                journey.groups[g] = journey.groups.get(g, 0) + 1
        for n in self._by_type.get(etype, ()):
            n.update(journey, event)
        for n in self._any_type:
            n.update(journey, event)
        if scorer is not None:
            scorer(journey, self.members(journey, assignments, now), now)
        out = Changes()
        full = journey.full
        journey.full = False
        members = _Members(journey, assignments, now)
        changed: set[str] = set()
        seg_plan, out_plan = self._full_plan if full else self._plan(etype)
        for rule, must in seg_plan:
            if not must and (not changed or rule.refs.isdisjoint(changed)):
                continue
            c = rule.condition
            try:
                holds = c.holds(journey, now, members)
            except Exception as exc:  # a broken rule fails alone, as "not matched"
                out.errors.append((rule.name, f"{type(exc).__name__}: {exc}"))
                holds = False
            was = rule.name in journey.segments
            if holds == was:
                continue
            changed.add(rule.name)
            seg = rule.segment
            assert seg is not None
            if holds:
                journey.segments[rule.name] = now
                if seg.scope == "session":
                    out.entered.append((rule.name, now))
                else:
                    prior = assignments.get(rule.name)
                    since = prior[0] if prior is not None and prior[1] > now else now
                    expires = now + seg.expires_after_days * DAY_MS
                    assignments[rule.name] = [since, expires]
                    out.assigned.append((rule.name, since, expires))
            else:
                del journey.segments[rule.name]
                if seg.scope == "session":
                    out.left.append((rule.name, now))
        for rule, must in out_plan:
            if rule.name in journey.outcomes:
                continue
            if not must and (not changed or rule.refs.isdisjoint(changed)):
                continue
            c = rule.condition
            try:
                holds = c.holds(journey, now, members)
            except Exception as exc:
                out.errors.append((rule.name, f"{type(exc).__name__}: {exc}"))
                continue
            if holds:
                outcome = rule.outcome
                assert outcome is not None
                value = _value(event, outcome.value_from)
                journey.outcomes[rule.name] = [now, value]
                out.achieved.append((rule.name, now, value))
        return out

    def members(
        self, journey: Journey | None, assignments: Mapping[str, list[int]], now: int
    ) -> dict[str, int]:
        """Segments the visitor is in now -> since when (session ones, then assignments)."""
        out: dict[str, int] = {}
        if journey is not None and journey.segments:
            segs = journey.segments
            rank = self._session_rank
            names = [n for n in segs if n in rank]
            if len(names) > 1:
                names.sort(key=rank.__getitem__)
            for name in names:
                out[name] = segs[name]
        for name, (since, expires) in assignments.items():
            if expires > now and name in self.segment_by_name:
                out[name] = since
        return out


def _value(event: JourneyEvent, key: str | None) -> float | None:
    if key is None:
        return None
    v: Any = event.attributes.get(key)
    if isinstance(v, bool) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _topological(by_name: Mapping[str, Segment], problems: list[tuple[str, str, str]]) -> list[str]:
    """Segment names, each after the segments it reads; cycles are reported as problems."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name) :], name]
            problems.append(
                ("segment", name, "segments refer to each other in a cycle: " + " -> ".join(cycle))
            )
            return
        state[name] = 1
        for ref in sorted(references(by_name[name].condition)):
            if ref in by_name:
                visit(ref, [*trail, name])
        state[name] = 2
        order.append(name)

    for name in by_name:
        visit(name, [])
    return order


@dataclass(slots=True)
class Evaluation:
    """From-scratch results over a history: segments true at its end, outcomes achieved."""

    segments: dict[str, bool]
    outcomes: dict[str, int]  # name -> index of the event that achieved it
    assignments: dict[str, list[int]]  # customer-scope: name -> [since, expires at]


def evaluate_history(
    ruleset: Ruleset,
    history: Sequence[JourneyEvent],
    ctx: Context,
    *,
    assignments: Mapping[str, list[int]] | None = None,
) -> Evaluation:
    """Evaluate every rule over ``history`` as a whole (each prefix for outcomes), the
    definition the incremental :meth:`Ruleset.step` must agree with.

    Segments are judged at the last event's time; an outcome is achieved at the first
    prefix whose condition holds. Customer assignments from before are given as they are.
    """
    assigned = {k: list(v) for k, v in (assignments or {}).items()}
    outcomes: dict[str, int] = {}
    segs: dict[str, bool] = {}
    for end in range(1, len(history) + 1):
        prefix = history[:end]
        now = max(e.ts for e in prefix)
        segs = {}
        for rule in ruleset.segments:
            members = {k: True for k, v in assigned.items() if v[1] > now}
            members.update((k, True) for k, v in segs.items() if v)
            holds = rule.condition.holds_over(prefix, ctx, now, members)
            segs[rule.name] = holds
            seg = rule.segment
            if holds and seg is not None and seg.scope == "customer":
                prior = assigned.get(rule.name)
                since = prior[0] if prior is not None and prior[1] > now else now
                assigned[rule.name] = [since, now + seg.expires_after_days * DAY_MS]
        members = {k: True for k, v in assigned.items() if v[1] > now}
        members.update((k, True) for k, v in segs.items() if v)
        for rule in ruleset.outcomes:
            if rule.name not in outcomes and rule.condition.holds_over(prefix, ctx, now, members):
                outcomes[rule.name] = end - 1
    return Evaluation(segs, outcomes, assigned)
