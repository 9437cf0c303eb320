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
   later events (its reason is recorded once per reason).
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

from opportune.core.conditions import Members, Node, Predicate, may_change_with_time, why_not
from opportune.core.journey import Journey
from opportune.core.pacing import PacingDecision, PacingTarget, QueueOutlook
from opportune.core.pacing import decide as pace

Channel = Literal["content", "chat", "bot", "webhook"]
Activation = Literal["immediately", "delay", "next_page", "next_visit"]
ON_PAGE: Final = ("content", "chat", "bot")
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


class Engagement(msgspec.Struct, array_like=True):
    """A visitor's engagement history, kept in its live state."""

    session_id: str = ""
    # This visit: map -> [qualified at, due at (0: waiting for the next page/visit), status]
    # status: "due" | "holdout" | "offered" | "done"
    maps: dict[str, list[Any]] = msgspec.field(default_factory=dict)
    # Block reasons already recorded this visit: "map|reason".
    blocked: list[str] = msgspec.field(default_factory=list)
    # The offer on the page now: [instance id, map, channel, offered at, expires at] or empty.
    showing: list[Any] = msgspec.field(default_factory=list)
    last_offer_at: int = 0
    rejected: dict[str, int] = msgspec.field(default_factory=dict)  # channel -> at
    agent_chat_at: int = 0  # when the visitor last talked with an agent (this visit)
    # Kept across visits: maps waiting for the next visit (map -> qualified at) and, for
    # customer-segment maps, the assignment (since) each last fired for.
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


@dataclass(slots=True)
class Decision:
    offers: list[tuple[str, ActionMap]] = field(default_factory=list)  # (instance, map)
    webhooks: list[tuple[str, ActionMap]] = field(default_factory=list)
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
    e.showing = []
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
    if e.showing and e.showing[4] <= now:
        e.showing = []  # an unanswered offer expired (the widget reports the timeout)
    out = Decision()
    why = out.why
    assignments = assignments or {}
    due: list[ActionMap] = []
    recheck: list[int] = []
    j = journey
    qualified, next_visit = e.maps, e.next_visit
    for m in maps:
        name = m.name
        if not m.enabled:
            why[name] = "disabled"
            continue
        seen = qualified.get(name)
        if seen is None and name in next_visit and next_visit[name] < j.started_at:
            # Qualified in an earlier visit, to be engaged on this one.
            seen = qualified[name] = [next_visit.pop(name), now, "due"]
        if seen is None:
            if m.per_assignment_of is not None:
                a = assignments.get(m.per_assignment_of)
                if a is not None and e.assignment_used.get(name) == a[0]:
                    why[name] = "already fired for this segment assignment"
                    continue
            trigger = m.trigger
            if not trigger.holds(j, now, members):
                if explain:
                    why[name] = f"not qualified: {why_not(trigger, j, now, members)}"
                else:
                    why[name] = "not qualified"
                if trigger.timed and may_change_with_time(trigger, j, now, members):
                    recheck.append(5_000)
                continue
            inst = instance_id(j.session_id, name)
            out.records.append(Record(name, "qualified", now, inst))
            if m.per_assignment_of is not None and m.per_assignment_of in assignments:
                e.assignment_used[name] = assignments[m.per_assignment_of][0]
            if in_holdout(visitor_id, name, m.holdout):
                qualified[name] = [now, 0, "holdout"]
                out.records.append(Record(name, "holdout", now, inst, "in the holdout group"))
                why[name] = "qualified, held out (holdout group)"
                continue
            if m.activation == "next_visit":
                next_visit[name] = now
                qualified[name] = [now, 0, "waiting"]
                why[name] = "qualified; engages on the next visit"
                continue
            due_at = now + m.delay_ms if m.activation == "delay" else now
            if m.activation == "next_page":
                due_at = 0
            seen = qualified[name] = [now, due_at, "due"]
        status = seen[2]
        if status != "due":
            why[name] = _SETTLED.get(status, "already engaged this visit")
            continue
        if seen[1] == 0:  # next page: due once a page is viewed after qualifying
            if j.page_at > seen[0]:
                seen[1] = j.page_at
            else:
                why[name] = "qualified; engages on the next page"
                continue
        if seen[1] > now:
            why[name] = f"qualified; engages in {(seen[1] - now) / 1000:.0f} s"
            recheck.append(seen[1] - now)
            continue
        due.append(m)
    # Block and choose among the due maps; webhooks apart (they never meet the page).
    offers: list[ActionMap] = []
    paced: dict[str | None, str | None] = {}  # queue -> pacing's answer, once per decision
    recorded: set[str] | None = None  # e.blocked as a set, once a due map is blocked
    for m in due:
        reason = _blocked(m, j, e, now, caps, outlooks, pacing, pace_memo, paced)
        if reason is None:
            if m.channel == "webhook":
                inst = instance_id(j.session_id, m.name)
                out.webhooks.append((inst, m))
                e.maps[m.name][2] = "done"
                out.records.append(Record(m.name, "offered", now, inst))
                out.why[m.name] = "fired: webhook sent"
            else:
                offers.append(m)
            continue
        out.why[m.name] = f"blocked: {reason}"
        if reason.startswith(("no agents", "service-level")):
            recheck.append(15_000)  # agents may come: offer then, without waiting for an event
        key = f"{m.name}|{reason.split(':')[0]}"
        if recorded is None:
            recorded = set(e.blocked)
        if key not in recorded:
            recorded.add(key)
            e.blocked.append(key)
            inst = instance_id(j.session_id, m.name)
            out.records.append(Record(m.name, "blocked", now, inst, reason))
    if offers:
        if len(offers) > 1:
            offers.sort(key=lambda m: (-m.priority, _tie(visitor_id, j.session_id, m.name)))
        win = offers[0]
        inst = instance_id(j.session_id, win.name)
        out.offers.append((inst, win))
        lifetime = int(win.action.get("timeoutMs", 30_000))
        e.showing = [inst, win.name, win.channel, now, now + lifetime]
        e.last_offer_at = now
        e.maps[win.name][2] = "done"
        out.records.append(Record(win.name, "offered", now, inst))
        out.why[win.name] = "fired: offered now"
        for m in offers[1:]:
            out.why[m.name] = f"blocked: another map won ({win.name})"
            key = f"{m.name}|another map won"
            if recorded is None:
                recorded = set(e.blocked)
            if key not in recorded:
                recorded.add(key)
                e.blocked.append(key)
                out.records.append(
                    Record(
                        m.name,
                        "blocked",
                        now,
                        instance_id(j.session_id, m.name),
                        f"another map won ({win.name})",
                    )
                )
            recheck.append(lifetime)
    if recheck:
        out.recheck_in_ms = max(1_000, min(recheck))
    return out


def _blocked(
    m: ActionMap,
    j: Journey,
    e: Engagement,
    now: int,
    caps: Mapping[str, Caps],
    outlooks: Mapping[str, QueueOutlook],
    pacing: PacingTarget,
    pace_memo: PaceMemo | None,
    paced: dict[str | None, str | None],
) -> str | None:
    if m.channel in ON_PAGE:
        url = j.url
        if m.include_urls and not _any_matches(m.include_urls, url):
            return "page URL: not on an included page"
        if m.exclude_urls and _any_matches(m.exclude_urls, url):
            return "page URL: on an excluded page"
    closed = m.schedule.why_closed(now)
    if closed is not None:
        return closed
    if m.channel == "webhook":
        return None
    if e.showing:
        return f"existing offer: {e.showing[1]} is showing"
    cap = m.caps or caps.get(m.channel) or Caps()
    if e.last_offer_at and now - e.last_offer_at < cap.min_wait_ms:
        return f"frequency cap: an offer {(now - e.last_offer_at) / 1000:.0f} s ago"
    if cap.none_after_rejection and m.channel in e.rejected:
        return f"frequency cap: a {m.channel} offer was rejected this visit"
    if m.channel == "chat" and cap.none_after_agent_chat and e.agent_chat_at:
        return "frequency cap: already chatted with an agent this visit"
    if m.channel == "chat":
        queue = m.queue
        if queue in paced:  # one outlook per queue and decision: it is the same moment
            return paced[queue]
        reason: str | None = None
        outlook = outlooks.get(queue or "")
        if outlook is None:
            reason = f"no agents: queue {m.queue!r} has no agents"
        else:
            decision = (pace_memo or pace)(outlook, pacing)
            if not decision.offer:
                if decision.reason.startswith("no agents"):
                    reason = f"no agents: {decision.reason}"
                else:
                    reason = decision.reason
        paced[queue] = reason
        return reason
    return None


def _any_matches(patterns: tuple[Predicate, ...], url: str | None) -> bool:
    # A due map is checked again on every decision until it fires: plain loop, compiled
    # tests called directly.
    for p in patterns:  # noqa: SIM110 - a loop is cheaper than any(...)
        if p._test(url):
            return True
    return False


def answered(e: Engagement, instance: str, state: str, at: int, channel: str) -> None:
    """What the widget reported: the offer leaves the page; a rejection caps the channel;
    a chat that started with an agent caps further chats."""
    if e.showing and e.showing[0] == instance and state != "offered":
        e.showing = []
    if state == "rejected":
        e.rejected[channel] = at
    if state == "started" and channel == "chat":
        e.agent_chat_at = at
