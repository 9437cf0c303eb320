"""The routing engine in the server: interactions in, agents chosen by the pure policies of
``core/routing.py`` and ``core/predictive.py``, every decision stored with its scores,
propensity and "why".

A dispatch pass is one transaction that reads the waiting interactions and the agents,
runs the policy and writes the assignments; on PostgreSQL it holds an advisory lock, so
passes of several processes never assign the same agent slot twice. A pass runs when an
interaction arrives, one ends or is abandoned, or an agent's presence changes — the
moment capacity frees up.

Arms: a queue with predictive routing keeps a permanent control share routed by the
standard strategy (ongoing value), and a comparison test assigns predictive or standard
per interaction (random) or in alternating time slices (warm-up slices not measured).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection, Row

from opportune.core.arms import ArmRouting, route_arms
from opportune.core.conditions import parse_duration
from opportune.core.kpis import KPI
from opportune.core.routing import (
    Agent,
    Interaction,
    PredictiveSettings,
    Queue,
    Ring,
    SkillRequirement,
    staffing,
)
from opportune.core.valuation import assign_arm
from opportune.engine import metrics
from opportune.engine.routing_scorer import KpiScorer
from opportune.engine.rules import RuleBook
from opportune.ml.routing.features import decode_features
from opportune.store import conversations as conversations_store
from opportune.store import interactions as store
from opportune.workspace.engagement import AgentDoc, KpiDoc, QueueDoc

PRESENCES = ("available", "busy", "away", "offline")


class RoutingError(ValueError):
    """A request the routing state refuses: ``code`` for the API, ``message`` for people.

    >>> e = RoutingError(404, "unknown_agent", "agent 'x' not found")
    >>> (e.status, e.code, str(e))
    (404, 'unknown_agent', "agent 'x' not found")
    """

    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.path = status, code, message, path


def customer_features(conn: Connection, body: Mapping[str, Any]) -> dict[str, float]:
    """The customer at arrival, as the KPI model sees them (frozen in the interaction, so
    training later reads exactly what serving saw): the features the caller posted (a
    list becomes ``x0``, ``x1``, …), the visitor's journey (``segment:<name>`` and
    ``score:<outcome>``, see ``api/app._journey_features``), whether they are identified
    and how many interactions they had before."""
    posted = body.get("features") or {}
    out: dict[str, float] = (
        {f"x{i}": float(v) for i, v in enumerate(posted)}
        if isinstance(posted, list | tuple)
        else {str(k): float(v) for k, v in posted.items()}
    )
    out.update({str(k): float(v) for k, v in (body.get("journey") or {}).items()})
    customer = body.get("customer_id")
    out["identified"] = 1.0 if customer else 0.0
    if customer:
        out["past_interactions"] = float(store.ended_count(conn, customer))
    return out


def core_queue(doc: QueueDoc, kpi: KpiDoc | None) -> Queue:
    p = doc.predictive
    direction = kpi.to_core().direction if kpi else "maximize"
    return Queue(
        name=doc.name,
        media=frozenset(doc.media),
        skills=tuple(SkillRequirement(s.skill, s.min_proficiency) for s in doc.skills),
        language=doc.language,
        priority=doc.priority,
        strategy=doc.strategy,
        rings=tuple(
            Ring(
                parse_duration(r.after_wait, []) / 1000,
                tuple(SkillRequirement(s.skill, s.min_proficiency) for s in r.skills),
                r.require_language,
            )
            for r in doc.rings
        ),
        predictive=PredictiveSettings(
            enabled=p.enabled,
            dry_run=p.dry_run,
            hold_timeout_s=parse_duration(p.hold_timeout, []) / 1000,
            min_free_agents=p.min_free_agents,
            exploration=p.exploration,
            balance=p.balance,
            reserve_weight=p.reserve_weight,
            method=p.method,
            hold_rule=p.hold_rule,
            service_level_s=parse_duration(doc.service_level_within, []) / 1000,
            mean_handle_s=parse_duration(doc.handle_time, []) / 1000,
            arrival_rate_per_s=doc.arrival_rate_per_hour / 3600,
            patience_s=parse_duration(doc.patience, []) / 1000,
            direction=direction,
            kpi_name=kpi.name if kpi else "KPI",
        ),
    )


@dataclass(frozen=True, slots=True)
class Assigned:
    interaction_id: str
    agent_id: str
    method: str
    arm: str
    propensity: float
    why: str
    scores: tuple[tuple[str, float], ...]


class Router:
    def __init__(
        self,
        engine: Engine,
        *,
        queues: Mapping[str, QueueDoc],
        agents: Mapping[str, AgentDoc],
        kpis: Mapping[str, KpiDoc],
        score: KpiScorer | None = None,
        rng: random.Random | None = None,
        rules: RuleBook | None = None,
    ) -> None:
        """``rules``: where KPIs and queues' KPIs set over the API come from (the queues
        and KPIs passed are then only the start)."""
        self.engine = engine
        self.agent_docs = agents
        self.rules = rules
        self._set(queues, kpis)
        self._version: int | None = None if rules is not None else -2
        self.score = score
        self.rng = rng or random.Random()
        # Told of every assignment after its pass committed, from whichever thread ran it
        # (the chat service announces them to agents and visitors).
        self.listeners: list[Callable[[list[Assigned]], None]] = []

    def _set(self, queues: Mapping[str, QueueDoc], kpis: Mapping[str, KpiDoc]) -> None:
        self._docs, self._kpis = dict(queues), dict(kpis)
        self._queues = {n: core_queue(q, kpis.get(q.kpi or "")) for n, q in queues.items()}

    def _sync(self) -> None:
        if self.rules is not None and self.rules.version != self._version:
            self._set(self.rules.queues(), self.rules.kpis())
            self._version = self.rules.version

    @property
    def docs(self) -> Mapping[str, QueueDoc]:
        """The queue documents, each with the KPI it optimises now."""
        self._sync()
        return self._docs

    @property
    def kpis(self) -> Mapping[str, KpiDoc]:
        self._sync()
        return self._kpis

    @property
    def queues(self) -> Mapping[str, Queue]:
        self._sync()
        return self._queues

    def kpi_of(self, queue: str) -> KPI | None:
        doc = self.docs[queue]
        return self.kpis[doc.kpi].to_core() if doc.kpi and doc.kpi in self.kpis else None

    # -- requests --------------------------------------------------------------------------

    def arrive(self, body: Mapping[str, Any], now_ms: int) -> list[Assigned]:
        queue = body["queue"]
        if queue not in self.queues:
            raise RoutingError(404, "unknown_queue", f"queue {queue!r} not found", "queue")
        medium = body.get("medium", "chat")
        if medium not in self.queues[queue].media:
            raise RoutingError(
                422,
                "medium_not_served",
                f"queue {queue!r} takes {sorted(self.queues[queue].media)}, not {medium!r}",
                "medium",
            )
        with self.engine.begin() as conn:
            if store.exists(conn, body["id"]):
                raise RoutingError(
                    409, "already_exists", f"interaction {body['id']!r} exists", "id"
                )
            new = store.NewInteraction(
                id=body["id"],
                queue=queue,
                medium=medium,
                arm=self._arm(queue, body["id"], now_ms),
                features=customer_features(conn, body),
                language=body.get("language"),
                priority=body.get("priority", 0),
                customer_id=body.get("customer_id"),
                visitor_id=body.get("visitor_id"),
            )
            store.insert(conn, new, now_ms=now_ms)
        return self.dispatch(now_ms)

    def _arm(self, queue: str, interaction_id: str, now_ms: int) -> str:
        doc = self.docs[queue]
        c = doc.comparison
        return assign_arm(
            interaction_id,
            now_ms,
            predictive=doc.predictive.enabled,
            control_share=doc.predictive.control_share,
            mode=c.mode,
            start_ms=int(c.start.timestamp() * 1000) if c.start is not None else None,
            slice_ms=parse_duration(c.slice, []),
            warmup_slices=c.warmup_slices,
        )

    def end(
        self,
        interaction_id: str,
        wrap_up_code: str | None,
        now_ms: int,
        *,
        also: Callable[[Connection], None] | None = None,
    ) -> list[Assigned]:
        """End an interaction with its wrap-up code (abandoned if it never got an agent).
        ``also`` runs in the same transaction (the conversation's own move), so the two
        never disagree after a crash."""
        with self.engine.begin() as conn:
            row = self._row(conn, interaction_id)
            if row.status == "ended":
                raise RoutingError(409, "already_ended", "the interaction has ended already")
            if row.status == "assigned":
                self._check_wrap_up(row.queue, wrap_up_code)
            status = "ended" if row.status == "assigned" else "abandoned"
            store.finish(
                conn, interaction_id, status=status, now_ms=now_ms, wrap_up_code=wrap_up_code
            )
            if row.agent_id:
                store.release_agent(conn, row.agent_id, now_ms=now_ms)
            if also is not None:
                also(conn)
        return self.dispatch(now_ms)

    def give_up(
        self, interaction_id: str, now_ms: int, *, also: Callable[[Connection], None] | None = None
    ) -> list[Assigned]:
        """The customer left before an agent took part (waiting, or assigned and not yet
        accepted): ``abandoned``, the agent's slot freed. Unknown or ended: only ``also``."""
        with self.engine.begin() as conn:
            row = store.get(conn, interaction_id)
            if row is not None and row.status in ("waiting", "assigned"):
                store.finish(conn, interaction_id, status="abandoned", now_ms=now_ms)
                if row.agent_id:
                    store.release_agent(conn, row.agent_id, now_ms=now_ms)
            if also is not None:
                also(conn)
        return self.dispatch(now_ms)

    def requeue(
        self,
        interaction_id: str,
        now_ms: int,
        *,
        queue: str | None = None,
        also: Callable[[Connection], None] | None = None,
    ) -> list[Assigned]:
        """Back to waiting — declined by its agent, or transferred to ``queue`` — and routed
        again at once (never to the agent who declined, while others are free: the pass sees
        that agent's slot as just freed, and longest-idle ranks them last)."""
        if queue is not None and queue not in self.queues:
            raise RoutingError(404, "unknown_queue", f"queue {queue!r} not found", "queue")
        with self.engine.begin() as conn:
            self._row(conn, interaction_id)
            agent = store.requeue(conn, interaction_id, queue=queue)
            if agent:
                store.release_agent(conn, agent, now_ms=now_ms)
            if also is not None:
                also(conn)
        return self.dispatch(now_ms)

    def transfer_to_agent(
        self,
        interaction_id: str,
        agent_id: str,
        now_ms: int,
        *,
        also: Callable[[Connection], None] | None = None,
    ) -> list[Assigned]:
        """Hand an interaction to a named agent, if they are available with a free slot."""
        if agent_id not in self.agent_docs:
            raise RoutingError(404, "unknown_agent", f"agent {agent_id!r} not found", "agent")
        with self.engine.begin() as conn:
            store.lock_dispatch(conn)
            row = self._row(conn, interaction_id)
            target = next(a for a in self.agents(conn) if a.id == agent_id)
            free = target.capacity.get(row.medium, 0) - target.load.get(row.medium, 0)
            if target.presence != "available" or free <= 0:
                raise RoutingError(
                    409, "agent_not_free", f"{agent_id} is {target.presence} with no free slot"
                )
            previous = store.requeue(conn, interaction_id)
            if previous:
                store.release_agent(conn, previous, now_ms=now_ms)
            made = Assigned(
                interaction_id,
                agent_id,
                "transfer",
                row.arm or "standard",
                1.0,
                f"transferred by {previous or 'a supervisor'}",
                (),
            )
            store.assign(
                conn,
                store.Assignment(interaction_id, agent_id, "transfer", 1.0, made.why, (), ()),
                now_ms=now_ms,
            )
            conversations_store.route_in(conn, interaction_id, agent_id, now_ms=now_ms)
            if also is not None:
                also(conn)
        self._tell([made])
        return [made]

    def _tell(self, made: list[Assigned]) -> None:
        if made:
            metrics.routed(a.method for a in made)
            for listener in self.listeners:
                listener(made)

    def _check_wrap_up(self, queue: str, wrap_up_code: str | None) -> None:
        """A queue with wrap-up codes requires one of them to end an answered interaction."""
        codes = self.docs[queue].wrap_up_codes
        if not codes:
            return
        if wrap_up_code is None:
            raise RoutingError(
                422,
                "wrap_up_required",
                f"a wrap-up code is required: one of {codes}",
                "wrapUpCode",
            )
        if wrap_up_code not in codes:
            raise RoutingError(
                422,
                "unknown_wrap_up_code",
                f"{wrap_up_code!r} is not a wrap-up code of queue {queue!r}; one of {codes}",
                "wrapUpCode",
            )

    def abandon(self, interaction_id: str, now_ms: int) -> None:
        with self.engine.begin() as conn:
            row = self._row(conn, interaction_id)
            if row.status != "waiting":
                raise RoutingError(409, "not_waiting", f"the interaction is {row.status}")
            store.finish(conn, interaction_id, status="abandoned", now_ms=now_ms)

    def presence(self, agent_id: str, presence: str, now_ms: int) -> list[Assigned]:
        if agent_id not in self.agent_docs:
            raise RoutingError(404, "unknown_agent", f"agent {agent_id!r} not found")
        if presence not in PRESENCES:
            raise RoutingError(422, "bad_presence", f"presence is one of {PRESENCES}", "presence")
        with self.engine.begin() as conn:
            store.set_presence(conn, agent_id, presence, now_ms=now_ms)
        return self.dispatch(now_ms)

    @staticmethod
    def _row(conn: Connection, interaction_id: str) -> Row[Any]:
        row = store.get(conn, interaction_id)
        if row is None:
            raise RoutingError(404, "not_found", f"interaction {interaction_id!r} not found")
        return row

    # -- the pass --------------------------------------------------------------------------

    def agents(self, conn: Connection) -> list[Agent]:
        states = store.agent_states(conn)
        load = store.agent_loads(conn)
        out = []
        for name, d in sorted(self.agent_docs.items()):
            st = states.get(name)
            out.append(
                Agent(
                    id=name,
                    skills=dict(d.skills),
                    languages=frozenset(d.languages),
                    presence=st.presence if st else "offline",
                    capacity=dict(d.capacity),
                    load=load.get(name, {}),
                    idle_since_ms=st.idle_since if st else 0,
                    last_assigned_ms=st.last_assigned if st else 0,
                    queues=frozenset(d.queues) if d.queues is not None else None,
                )
            )
        return out

    def dispatch(self, now_ms: int) -> list[Assigned]:
        """Route what waits to the agents free now; return the assignments made (and tell
        the listeners, once the pass has committed)."""
        made = self._dispatch(now_ms)
        self._tell(made)
        return made

    def _dispatch(self, now_ms: int) -> list[Assigned]:
        with self.engine.begin() as conn:
            store.lock_dispatch(conn)
            rows = store.waiting(conn)
            if not rows:
                return []
            agents = self.agents(conn)
            waiting = {
                r.id: Interaction(
                    id=r.id,
                    queue=r.queue,
                    medium=r.medium,
                    arrived_at_ms=r.arrived_at,
                    language=r.language,
                    priority=r.priority,
                    customer_id=r.customer_id or "",
                )
                for r in rows
                if r.queue in self.queues
            }
            arms = {r.id: r.arm or "standard" for r in rows}
            held_since = {r.id: r.held_since for r in rows if r.held_since is not None}
            routing = self._route(rows, waiting, agents, arms, held_since, now_ms)
            for h in routing.held:
                if h.interaction_id not in held_since:
                    store.hold(conn, h.interaction_id, since_ms=h.since_ms)
            out = []
            for d, arm in routing.decisions:
                if not conversations_store.routable(conn, d.interaction_id):
                    # Its visitor left while the interaction was being queued.
                    store.finish(conn, d.interaction_id, status="abandoned", now_ms=now_ms)
                    continue
                if d.method == "predictive" and self.score is not None:
                    version = self.score.version(waiting[d.interaction_id].queue)
                    d = replace(d, why=f"{d.why} (KPI model {version})")
                assignment = store.Assignment(
                    d.interaction_id,
                    d.agent_id,
                    d.method,
                    d.propensity,
                    d.why,
                    d.scores,
                    d.candidates,
                )
                if not store.assign(conn, assignment, now_ms=now_ms):
                    continue  # another pass assigned it first
                conversations_store.route_in(conn, d.interaction_id, d.agent_id, now_ms=now_ms)
                out.append(
                    Assigned(
                        d.interaction_id, d.agent_id, d.method, arm, d.propensity, d.why, d.scores
                    )
                )
            return out

    def _route(
        self,
        rows: Sequence[Row[Any]],
        waiting: Mapping[str, Interaction],
        agents: list[Agent],
        arms: Mapping[str, str],
        held_since: Mapping[str, int],
        now_ms: int,
    ) -> ArmRouting:
        """Score the predictive arm's interactions in modelled queues, then route all."""
        kpi_of = {q: d.kpi for q, d in self.docs.items()}
        modelled = {
            q for q in self.queues if self.score is not None and self.score.has(q, kpi_of[q])
        }
        scores: dict[str, dict[str, float]] = {}
        posteriors: dict[str, Any] = {}
        to_score = [
            i for i in waiting.values() if arms[i.id] == "predictive" and i.queue in modelled
        ]
        if to_score and self.score is not None:
            features = {r.id: decode_features(r.features) for r in rows if r.id in waiting}
            scores = self.score(to_score, agents, features)
            for q in {i.queue for i in to_score}:
                posteriors.update(self.score.posteriors(q))
        return route_arms(
            list(waiting.values()),
            agents,
            self.queues,
            now_ms,
            arms=arms,
            modelled=modelled,
            scores=scores,
            held_since=held_since,
            posteriors=posteriors,
            rng=self.rng,
        )

    def sync_presence(self, now_ms: int) -> None:
        """Write each chat queue's staffing (agents available, slots busy, chats waiting)
        where pacing reads it, from the agents' own presence: the agent desk calls this on
        every change, so chat offers follow who is really there. Until any agent has a
        presence here, ``PUT /v1/queues/{name}/presence`` (another tool's report) stands."""
        with self.engine.begin() as conn:
            if not store.agent_states(conn):
                return  # nobody routes here yet: queue presence is another tool's to report
            agents = self.agents(conn)
            waiting = Counter(r.queue for r in store.waiting(conn))
            for name, queue in self.queues.items():
                if "chat" not in queue.media:
                    continue
                available, busy = staffing(queue, agents, now_ms)
                store.set_queue_presence(
                    conn, name, available=available, busy=busy, waiting=waiting[name], now_ms=now_ms
                )

    def place(self, interaction_id: str, queue: str) -> int | None:
        """The waiting interaction's place in its queue (1 = next), or ``None``."""
        with self.engine.connect() as conn:
            rows = store.waiting_in(conn, queue)
        prio = self.queues[queue].priority if queue in self.queues else 0
        order = sorted(rows, key=lambda r: (-(prio + r.priority), r.arrived_at, r.id))
        ids = [r.id for r in order]
        return ids.index(interaction_id) + 1 if interaction_id in ids else None

    def waiting_count(self) -> int:
        with self.engine.connect() as conn:
            return store.waiting_count(conn)
