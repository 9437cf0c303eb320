"""Action maps: when to engage whom, and how — and why every other map did not fire.

:func:`decide` is the whole rule, a pure function over plain data: the visit's journey,
the visitor's engagement history, the maps, the time, and each queue's outlook for
pacing. The engine calls it after each batch; the tests call it with literals.

Per map, in order:

1. **qualify** — at most once per visit (a map triggered by a customer-scope segment: once
   per assignment of that segment); the trigger (a condition of the one condition
   language) must hold. A qualifying visitor in the map's holdout share is recorded as
   ``holdout`` and never engaged (so the uplift can be measured).
2. **activate** — immediately, after a delay, on the next page, or on the next visit; a
   map qualified but not yet due waits (``recheck_in_ms`` says when to look again).
3. **block** — a due map is blocked, with its reason, by: the page URL rules, its
   schedule, an offer already showing, a frequency cap, or (chat) pacing: no agents, or a
   predicted service level under target. A blocked map stays due and is tried again on
   later events (its reason is recorded once per reason). What blocks beyond the page
   and the schedule is the action type's rule (:mod:`opportune.core.action_types`).
4. **choose** — among the due, unblocked maps the highest priority wins; ties are broken
   by a hash of visitor, visit and map (fair across visitors, stable for one). The others
   wait ("another map won"). Webhooks run server-side: they are never blocked by an offer
   on the page and do not compete with offers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Final, Literal

import msgspec

from opportune.core.action_types import OFFER_LIFETIME_MS, Blocking, Channel, action_type
from opportune.core.conditions import Members, Node, Predicate, may_change_with_time, why_not
from opportune.core.journey import Journey
from opportune.core.pacing import PacingDecision, PacingTarget, QueueOutlook
from opportune.core.pacing import decide as pace

Activation = Literal["immediately", "delay", "next_page", "next_visit"]
_EVERY_DAY: Final = frozenset(range(7))


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a map may engage, in its own time zone (``tz``: a tzinfo given by the caller)."""

    tz: tzinfo | None = None
    days: frozenset[int] = frozenset(range(7))  # 0 = Monday
    start_minute: int = 0  # local time of day, minutes from midnight
    end_minute: int = 24 * 60
    start_ms: int | None = None  # first moment it may engage
    end_ms: int | None = None  # and the last
    closed: bool = False  # an emergency closure: nothing engages
    # Open at every moment (the default): no local time to compute, which costs more than
    # the rest of the block checks together.
    _always: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        always = (
            not self.closed
            and self.start_ms is None
            and self.end_ms is None
            and self.days >= _EVERY_DAY
            and self.start_minute <= 0
            and self.end_minute >= 24 * 60
        )
        object.__setattr__(self, "_always", always)

    def why_closed(self, now: int) -> str | None:
        if self._always:
            return None
        if self.closed:
            return "schedule: closed"
        if self.start_ms is not None and now < self.start_ms:
            return "schedule: before the start date"
        if self.end_ms is not None and now > self.end_ms:
            return "schedule: after the end date"
        local = datetime.fromtimestamp(now / 1000, self.tz)
        if local.weekday() not in self.days:
            return f"schedule: closed on {local.strftime('%A')}"
        minute = local.hour * 60 + local.minute
        if not self.start_minute <= minute < self.end_minute:
            return f"schedule: outside hours at {local.strftime('%H:%M')}"
        return None


@dataclass(frozen=True, slots=True)
class Caps:
    """Frequency caps of a channel (workspace defaults, which a map may override)."""

    min_wait_ms: int = 10_000  # between two offers to one visitor
    none_after_rejection: bool = True  # no other offer of this channel after a rejection
    none_after_agent_chat: bool = True  # chat: none after a conversation with an agent


@dataclass(frozen=True, slots=True)
class ActionMap:
    """One map: its trigger, its action (``channel``: the action type), when and how often."""

    name: str
    trigger: Node
    channel: Channel
    action: Mapping[str, Any] = field(default_factory=dict)  # what the widget / webhook gets
    queue: str | None = None  # chat: the queue it offers, paced by its outlook
    priority: int = 0
    activation: Activation = "immediately"
    delay_ms: int = 0
    include_urls: tuple[Predicate, ...] = ()  # the current page must match one of these
    exclude_urls: tuple[Predicate, ...] = ()  # and none of these
    schedule: Schedule = field(default_factory=Schedule)
    caps: Caps | None = None  # None: the workspace's caps for the channel
    holdout: float = 0.0  # share (0..1) of qualifying visitors deliberately not engaged
    per_assignment_of: str | None = None  # customer-scope segment: once per assignment
    enabled: bool = True


class Showing(msgspec.Struct, array_like=True, frozen=True):
    """The offer on the page now; all empty (:data:`NOT_SHOWING`) when there is none. The
    live state keeps it as a 5-item array and reads the empty array of older states."""

    instance: str = ""
    map: str = ""
    channel: str = ""
    offered_at: int = 0
    expires_at: int = 0

    @property
    def active(self) -> bool:
        """Whether an offer is on the page."""
        return bool(self.instance)


NOT_SHOWING: Final = Showing()


class MapState(msgspec.Struct, array_like=True):
    """A map's progress this visit (kept in the live state as a 3-item array)."""

    qualified_at: int
    due_at: int  # 0: waiting for the next page (or visit)
    status: str  # "due" | "holdout" | "waiting" | "done"


class Engagement(msgspec.Struct, array_like=True):
    """A visitor's engagement history, kept in its live state."""

    session_id: str = ""
    maps: dict[str, MapState] = msgspec.field(default_factory=dict)  # this visit's
    # Block reasons already recorded this visit: "map|reason".
    blocked: list[str] = msgspec.field(default_factory=list)
    showing: Showing = NOT_SHOWING
    last_offer_at: int = 0
    rejected: dict[str, int] = msgspec.field(default_factory=dict)  # channel -> at
    agent_chat_at: int = 0  # when the visitor last talked with an agent (this visit)
    # Kept across visits: maps waiting for the next visit (map -> qualified at) and, for
    # customer-scope segment maps, the assignment (since) each last fired for.
    next_visit: dict[str, int] = msgspec.field(default_factory=dict)
    assignment_used: dict[str, int] = msgspec.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Record:
    """A state an action instance went through, for the facts table and the explanation."""

    map: str
    state: str  # qualified | holdout | blocked | offered (webhook: offered = sent)
    at: int
    instance: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Fired:
    """A map that fired now: its action instance (an offer, or a webhook call to queue)."""

    instance: str
    map: ActionMap


@dataclass(slots=True)
class Decision:
    """What fired now (at most one offer), the records to store, why each map did (not)."""

    offers: list[Fired] = field(default_factory=list)
    webhooks: list[Fired] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)  # map -> why it did (not) fire now
    recheck_in_ms: int | None = None


def instance_id(session_id: str, map_name: str) -> str:
    """One action instance per visit and map: stable, so a retried batch is harmless."""
    digest = hashlib.blake2b(f"{session_id}\x00{map_name}".encode(), digest_size=10)
    return "ai_" + digest.hexdigest()


def in_holdout(visitor_id: str, map_name: str, share: float) -> bool:
    """Deterministic per visitor and map, uniform: the same visitor is always in the same
    arm of a map, independently across maps.

    >>> in_holdout("v1", "m", 0.0), in_holdout("v1", "m", 1.0)
    (False, True)
    """
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"holdout\x00{map_name}\x00{visitor_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64 < share


def _tie(visitor_id: str, session_id: str, name: str) -> int:
    digest = hashlib.blake2b(f"{visitor_id}\x00{session_id}\x00{name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def start_visit(e: Engagement, session_id: str) -> None:
    """A new visit: this-visit state is cleared; next-visit maps become due now."""
    if e.session_id == session_id:
        return
    e.session_id = session_id
    e.maps = {}
    e.blocked = []
    e.showing = NOT_SHOWING
    e.rejected = {}
    e.agent_chat_at = 0


class PaceMemo:
    """Pacing decisions remembered by outlook, for a caller to keep between decisions: the
    prediction (Erlang A, with matrix exponentials) costs milliseconds, and a queue's
    outlook takes few distinct values between changes of presence. The same answers: the
    decision is a function of the outlook and the target."""

    __slots__ = ("_paced", "size")

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._paced: dict[tuple[QueueOutlook, PacingTarget], PacingDecision] = {}

    def __call__(self, outlook: QueueOutlook, target: PacingTarget) -> PacingDecision:
        key = (outlook, target)
        got = self._paced.get(key)
        if got is None:
            if len(self._paced) >= self.size:
                self._paced.clear()  # outlooks drift (pending offers, presence): start afresh
            got = self._paced[key] = pace(outlook, target)
        return got


class _Pacer:
    """Why pacing holds a queue's offers back now: asked once per queue and decision (one
    outlook per queue: it is the same moment)."""

    __slots__ = ("_memo", "_outlooks", "_paced", "_target")

    def __init__(
        self,
        outlooks: Mapping[str, QueueOutlook],
        target: PacingTarget,
        memo: PaceMemo | None,
    ) -> None:
        self._outlooks, self._target, self._memo = outlooks, target, memo
        self._paced: dict[str | None, str | None] = {}

    def __call__(self, queue: str | None) -> str | None:
        if queue in self._paced:
            return self._paced[queue]
        reason: str | None = None
        outlook = self._outlooks.get(queue or "")
        if outlook is None:
            reason = f"no agents: queue {queue!r} has no agents"
        else:
            decision = (self._memo or pace)(outlook, self._target)
            if not decision.offer:
                no_agents = decision.reason.startswith("no agents")
                reason = f"no agents: {decision.reason}" if no_agents else decision.reason
        self._paced[queue] = reason
        return reason


_SETTLED: Final = {
    "holdout": "qualified, held out (holdout group)",
    "waiting": "qualified; engages on the next visit",
}


def decide(
    *,
    visitor_id: str,
    journey: Journey,
    members: Members,
    engagement: Engagement,
    maps: Sequence[ActionMap],
    now: int,
    caps: Mapping[str, Caps],
    outlooks: Mapping[str, QueueOutlook],
    pacing: PacingTarget,
    assignments: Mapping[str, list[int]] | None = None,
    explain: bool = False,
    pace_memo: PaceMemo | None = None,
) -> Decision:
    """Which action, if any, to offer now — and why every other map did not fire.

    ``engagement`` is updated in place (qualifications, the offer now showing). With
    ``explain``, a map whose trigger fails says which part failed (costlier: the live
    pipeline leaves it off; the explain endpoint turns it on). ``pace_memo``: a
    :class:`PaceMemo` the caller keeps (the same answers, sooner).
    """
    e = engagement
    start_visit(e, journey.session_id)
    if e.showing.active and e.showing.expires_at <= now:
        e.showing = NOT_SHOWING  # an unanswered offer expired (the widget reports the timeout)
    d = _Decider(visitor_id, journey, members, e, now, assignments or {}, explain)
    due = [m for m in maps if d.is_due(m)]
    if due:
        pacer = _Pacer(outlooks, pacing, pace_memo)
        offers = [m for m in due if d.unblocked(m, caps, pacer)]
        if offers:
            d.choose(offers)
    if d.recheck:
        d.out.recheck_in_ms = max(1_000, min(d.recheck))
    return d.out


class _Decider:
    """One decision's steps over its inputs: qualify and activate each map, block the due
    ones, choose among the offers; ``out`` and ``recheck`` gather what they find."""

    __slots__ = (
        "assignments",
        "e",
        "explain",
        "j",
        "members",
        "now",
        "out",
        "recheck",
        "recorded",
        "visitor_id",
    )

    def __init__(
        self,
        visitor_id: str,
        j: Journey,
        members: Members,
        e: Engagement,
        now: int,
        assignments: Mapping[str, list[int]],
        explain: bool,
    ) -> None:
        self.visitor_id, self.j, self.members, self.e = visitor_id, j, members, e
        self.now, self.assignments, self.explain = now, assignments, explain
        self.out = Decision()
        self.recheck: list[int] = []
        self.recorded: set[str] | None = None  # e.blocked as a set, once a due map is blocked

    def is_due(self, m: ActionMap) -> bool:
        """Qualify ``m`` if it is new this visit; whether it is due now (else why not)."""
        name, e, why = m.name, self.e, self.out.why
        if not m.enabled:
            why[name] = "disabled"
            return False
        seen = e.maps.get(name)
        if seen is None and name in e.next_visit and e.next_visit[name] < self.j.started_at:
            # Qualified in an earlier visit, to be engaged on this one.
            seen = e.maps[name] = MapState(e.next_visit.pop(name), self.now, "due")
        if seen is None:
            seen = self._qualify(m)
            if seen is None:
                return False
        if seen.status != "due":
            why[name] = _SETTLED.get(seen.status, "already engaged this visit")
            return False
        if seen.due_at == 0:  # next page: due once a page is viewed after qualifying
            if self.j.page_at <= seen.qualified_at:
                why[name] = "qualified; engages on the next page"
                return False
            seen.due_at = self.j.page_at
        if seen.due_at > self.now:
            why[name] = f"qualified; engages in {(seen.due_at - self.now) / 1000:.0f} s"
            self.recheck.append(seen.due_at - self.now)
            return False
        return True

    def _qualify(self, m: ActionMap) -> MapState | None:
        """The state of a map that qualifies now, if it is to be engaged this visit."""
        name, j, now, e, why = m.name, self.j, self.now, self.e, self.out.why
        segment = m.per_assignment_of
        a = self.assignments.get(segment) if segment is not None else None
        if a is not None and e.assignment_used.get(name) == a[0]:
            why[name] = "already fired for this segment assignment"
            return None
        if not m.trigger.holds(j, now, self.members):
            self._not_qualified(m)
            return None
        inst = instance_id(j.session_id, name)
        self.out.records.append(Record(name, "qualified", now, inst))
        if a is not None:
            e.assignment_used[name] = a[0]
        if in_holdout(self.visitor_id, name, m.holdout):
            e.maps[name] = MapState(now, 0, "holdout")
            self.out.records.append(Record(name, "holdout", now, inst, "in the holdout group"))
            why[name] = _SETTLED["holdout"]
            return None
        if m.activation == "next_visit":
            e.next_visit[name] = now
            e.maps[name] = MapState(now, 0, "waiting")
            why[name] = _SETTLED["waiting"]
            return None
        due_at = {"delay": now + m.delay_ms, "next_page": 0}.get(m.activation, now)
        seen = e.maps[name] = MapState(now, due_at, "due")
        return seen

    def _not_qualified(self, m: ActionMap) -> None:
        trigger, j, now, members = m.trigger, self.j, self.now, self.members
        if self.explain:
            self.out.why[m.name] = f"not qualified: {why_not(trigger, j, now, members)}"
        else:
            self.out.why[m.name] = "not qualified"
        if trigger.timed and may_change_with_time(trigger, j, now, members):
            self.recheck.append(5_000)

    def unblocked(self, m: ActionMap, caps: Mapping[str, Caps], pacer: _Pacer) -> bool:
        """Whether due ``m`` is an offer to choose from; a webhook fires here, at once."""
        t = action_type(m.channel)
        reason = _blocked_here(m, t.on_page, self.j.url, self.now)
        if reason is None:
            cap = m.caps or caps.get(m.channel) or Caps()
            reason = t.blocks(m, Blocking(self.e, self.now, cap, pacer))
        if reason is not None:
            self.out.why[m.name] = f"blocked: {reason}"
            if reason.startswith(("no agents", "service-level")):
                self.recheck.append(15_000)  # agents may come: offer then, without an event
            self._blocked(m.name, reason.split(":")[0], reason)
            return False
        if t.on_page:
            return True
        fired = self._fire(m, "fired: webhook sent")
        self.out.webhooks.append(fired)
        return False

    def choose(self, offers: list[ActionMap]) -> None:
        """The highest priority wins (ties: a hash, fair across visitors); the rest wait."""
        if len(offers) > 1:
            j, v = self.j, self.visitor_id
            offers.sort(key=lambda m: (-m.priority, _tie(v, j.session_id, m.name)))
        win = offers[0]
        fired = self._fire(win, "fired: offered now")
        self.out.offers.append(fired)
        lifetime = int(win.action.get("timeoutMs", OFFER_LIFETIME_MS))
        self.e.showing = Showing(
            fired.instance, win.name, win.channel, self.now, self.now + lifetime
        )
        self.e.last_offer_at = self.now
        for m in offers[1:]:
            reason = f"another map won ({win.name})"
            self.out.why[m.name] = f"blocked: {reason}"
            self._blocked(m.name, "another map won", reason)
            self.recheck.append(lifetime)

    def _fire(self, m: ActionMap, why: str) -> Fired:
        inst = instance_id(self.j.session_id, m.name)
        self.e.maps[m.name].status = "done"
        self.out.records.append(Record(m.name, "offered", self.now, inst))
        self.out.why[m.name] = why
        return Fired(inst, m)

    def _blocked(self, name: str, kind: str, reason: str) -> None:
        """Record a block reason once per map and kind this visit."""
        key = f"{name}|{kind}"
        if self.recorded is None:
            self.recorded = set(self.e.blocked)
        if key not in self.recorded:
            self.recorded.add(key)
            self.e.blocked.append(key)
            inst = instance_id(self.j.session_id, name)
            self.out.records.append(Record(name, "blocked", self.now, inst, reason))


def _blocked_here(m: ActionMap, on_page: bool, url: str | None, now: int) -> str | None:
    """The rules of every type: an on-page map's page URL rules, then the map's schedule."""
    if on_page:
        if m.include_urls and not _any_matches(m.include_urls, url):
            return "page URL: not on an included page"
        if m.exclude_urls and _any_matches(m.exclude_urls, url):
            return "page URL: on an excluded page"
    return m.schedule.why_closed(now)


def _any_matches(patterns: tuple[Predicate, ...], url: str | None) -> bool:
    # A due map is checked again on every decision until it fires: plain loop, compiled
    # tests called directly.
    for p in patterns:  # noqa: SIM110 - a loop is cheaper than any(...)
        if p._test(url):
            return True
    return False


def answered(e: Engagement, instance: str, state: str, at: int, channel: str) -> None:
    """What the widget reported: the offer leaves the page unless it is just shown; the
    rest is the action type's (a rejection caps the channel, a chat started with an agent
    caps further chats)."""
    if e.showing.active and e.showing.instance == instance and state != "offered":
        e.showing = NOT_SHOWING
    action_type(channel).answer(e, state, at)
