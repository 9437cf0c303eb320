"""A queue's routing history as the KPI model sees it (:class:`HistoryRow`), and the one
feature layout that training and serving share (:class:`RoutingSpec`).

Every interaction row keeps, from its arrival, the customer's features as a JSON object
(``features``: what the API caller posted, identity, past interactions, the visitor's
segments and outcome scores — see ``engine/router.customer_features``), the agents that
were eligible and free when it was routed (``candidates``) and the decision's propensity.
Training reads those rows back (``store/routing_history.py``), so a model sees at training
exactly what it will see when serving: the frozen state at arrival, never anything learnt
later.

A row is *labelled* once its KPI is known: at the wrap-up for wrap-up KPIs, at the end for
handle time, and for outcome-tracked KPIs only once the attribution window has closed
(until then "no outcome yet" is not "no outcome"), from the attributions posted with the
KPI's own outcome id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from opportune.core.kpis import KPI
from opportune.ml.routing.model import TrainingSet
from opportune.workspace.engagement import AgentDoc

CONTEXT = ("hour_utc", "other_language")  # of the interaction
PAIR = ("speaks_language",)  # of the customer with each agent
MAX_CUSTOMER_FEATURES = 120
MIN_FEATURE_SHARE = 0.01  # a feature seen in fewer rows than this is noise to the model


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One ended, labelled interaction: who handled it, its KPI label, and what routing
    knew at its arrival (features, candidates, the decision's propensity)."""

    id: str
    arrived_at: int
    ended_at: int
    agent_id: str
    label: float
    arm: str
    method: str
    propensity: float
    wait_s: float
    handle_s: float
    language: str | None
    features: Mapping[str, float]
    candidates: tuple[str, ...]


def decode_features(text: str | None) -> dict[str, float]:
    """The stored features of an interaction; a list (the API's first form) as x0, x1, …

    >>> decode_features('{"age": 41}'), decode_features("[1, 2.5]"), decode_features(None)
    ({'age': 41.0}, {'x0': 1.0, 'x1': 2.5}, {})
    """
    if not text:
        return {}
    raw = json.loads(text)
    if isinstance(raw, list):
        return {f"x{i}": float(v) for i, v in enumerate(raw)}
    return {str(k): float(v) for k, v in raw.items()}


class RoutingHistory(Protocol):
    """Where training reads a queue's labelled interactions from (the store, in production)."""

    def rows(self, queue: str, kpi: KPI, *, now_ms: int, since_ms: int = 0) -> list[HistoryRow]:
        """Ended interactions of ``queue`` since ``since_ms`` whose label is known, oldest
        first."""
        ...


@dataclass(frozen=True)
class RoutingSpec:
    """The feature layout of one queue's KPI model."""

    queue: str
    kpi: str
    customer: tuple[str, ...]  # names of the customer features, in column order
    skills: tuple[str, ...]  # agent features: proficiency in each of these skills
    language: str | None = None  # the queue's default language
    context: tuple[str, ...] = CONTEXT
    pair: tuple[str, ...] = PAIR
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        rows: Sequence[HistoryRow],
        *,
        queue: str,
        kpi: str,
        agents: Mapping[str, AgentDoc],
        language: str | None,
    ) -> RoutingSpec:
        """The customer features seen in at least 1% of ``rows`` (the most frequent first,
        at most 120, then by name), and every skill the workspace's agents have."""
        seen: dict[str, int] = {}
        for r in rows:
            for k in r.features:
                seen[k] = seen.get(k, 0) + 1
        least = max(1, math.ceil(MIN_FEATURE_SHARE * len(rows)))
        common = sorted((k for k, n in seen.items() if n >= least), key=lambda k: (-seen[k], k))
        names = tuple(sorted(common[:MAX_CUSTOMER_FEATURES]))
        skills = tuple(sorted({s for a in agents.values() for s in a.skills}))
        return cls(queue, kpi, names, skills, language)

    def to_json(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "kpi": self.kpi,
            "customer": list(self.customer),
            "skills": list(self.skills),
            "language": self.language,
            "context": list(self.context),
            "pair": list(self.pair),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoutingSpec:
        return cls(
            data["queue"],
            data["kpi"],
            tuple(data["customer"]),
            tuple(data["skills"]),
            data.get("language"),
            tuple(data.get("context", CONTEXT)),
            tuple(data.get("pair", PAIR)),
        )

    # -- rows ------------------------------------------------------------------------------

    def customer_row(self, features: Mapping[str, float]) -> list[float]:
        return [float(features.get(n, math.nan)) for n in self.customer]

    def context_row(self, arrived_ms: int, language: str | None) -> list[float]:
        hour = (arrived_ms // 3_600_000) % 24
        other = float(language is not None and language != (self.language or language))
        return [float(hour), other]

    def agent_features(self, agents: Mapping[str, AgentDoc]) -> dict[str, tuple[float, ...]]:
        return {
            name: tuple(float(a.skills.get(s, 0)) for s in self.skills)
            for name, a in agents.items()
        }

    def pair_rows(
        self, language: str | None, agent_ids: Sequence[str], agents: Mapping[str, AgentDoc]
    ) -> np.ndarray:
        lang = language or self.language
        return np.array(
            [
                [float(lang is None or (a in agents and lang in agents[a].languages))]
                for a in agent_ids
            ],
            dtype=float,
        ).reshape(len(agent_ids), len(self.pair))

    def training_set(
        self, rows: Sequence[HistoryRow], agents: Mapping[str, AgentDoc]
    ) -> TrainingSet:
        n = len(rows)
        return TrainingSet(
            customer=np.array([self.customer_row(r.features) for r in rows], dtype=float).reshape(
                n, len(self.customer)
            ),
            context=np.array(
                [self.context_row(r.arrived_at, r.language) for r in rows], dtype=float
            ).reshape(n, len(self.context)),
            agents=np.array([r.agent_id for r in rows], dtype=object),
            labels=np.array([r.label for r in rows], dtype=float),
            times_ms=np.array([r.arrived_at for r in rows], dtype=np.int64),
            pair=np.array(
                [self.pair_rows(r.language, [r.agent_id], agents)[0] for r in rows], dtype=float
            ).reshape(n, len(self.pair)),
        )
