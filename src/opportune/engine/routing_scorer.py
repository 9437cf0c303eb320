"""The KPI models in the server: every candidate agent's predicted KPI for the interactions
a dispatch pass routes predictively, from each queue's active model."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from opportune.core.predictive import Posterior
from opportune.core.routing import Agent, Interaction
from opportune.ml.routing.registry import LoadedRouting, RoutingRegistry
from opportune.workspace.engagement import AgentDoc

log = logging.getLogger(__name__)


class KpiScorer:
    """Each queue's active KPI model, reloaded on :meth:`refresh`; a queue without one is
    routed by its standard strategy.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from opportune.ml.routing.registry import RoutingRegistry
    >>> scorer = KpiScorer(RoutingRegistry(Path(tempfile.mkdtemp())), {}, ["loans"])
    >>> scorer.has("loans"), scorer.version("loans"), scorer.posteriors("loans")
    (False, None, {})
    """

    def __init__(
        self, registry: RoutingRegistry, agents: Mapping[str, AgentDoc], queues: Iterable[str]
    ) -> None:
        self.registry = registry
        self.agent_docs = agents
        self.queue_names = tuple(queues)
        self.models: dict[str, LoadedRouting] = {}
        self._posteriors: dict[tuple[str, str], dict[str, Posterior]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Pick up models activated since (by ``opportune train routing`` or by hand)."""
        models = {}
        for q in self.queue_names:
            try:
                found = self.registry.active_routing(q)
            except Exception:  # a broken version must not stop routing: standard routing
                log.exception("could not load the KPI model of queue %s", q)
                found = None
            if found is not None:
                models[q] = found
        self.models = models

    def has(self, queue: str, kpi: str | None = None) -> bool:
        """Whether ``queue`` has an active model (for ``kpi``, when named: a model trained
        for the KPI the queue had before is not used for its new one)."""
        m = self.models.get(queue)
        return m is not None and (kpi is None or m.card.get("kpi") == kpi)

    def version(self, queue: str) -> str | None:
        m = self.models.get(queue)
        return m.version if m else None

    def posteriors(self, queue: str) -> dict[str, Posterior]:
        """Each agent's posterior of their effect, for Thompson sampling (kept per model:
        a dispatch pass asks for them every time)."""
        m = self.models.get(queue)
        if m is None:
            return {}
        found = self._posteriors.get((queue, m.version))
        if found is None:
            found = self._posteriors[(queue, m.version)] = m.model.posteriors()
        return found

    def __call__(
        self,
        waiting: Sequence[Interaction],
        agents: Sequence[Agent],
        features: Mapping[str, Mapping[str, float]],
    ) -> dict[str, dict[str, float]]:
        """Per interaction (of a queue with a model: see :meth:`has`), the predicted KPI
        with every agent of its queue (busy ones too: the greedy method ranks its hold by
        them)."""
        out: dict[str, dict[str, float]] = {}
        for i in waiting:
            m = self.models.get(i.queue)
            if m is None:
                continue
            ids = [a.id for a in agents if a.queues is None or i.queue in a.queues]
            if not ids:
                continue
            q = m.model.predict(
                m.spec.customer_row(features.get(i.id, {})),
                ids,
                m.spec.context_row(i.arrived_at_ms, i.language),
                m.spec.pair_rows(i.language, ids, self.agent_docs),
            )
            out[i.id] = {a: float(v) for a, v in zip(ids, q, strict=True)}
        return out
