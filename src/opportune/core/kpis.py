"""KPIs: what a predictive queue optimises, the training label of one interaction, outcome
attributions credited to conversations, and whether the history suffices to train.

A KPI is tracked by the agent's wrap-up code (codes that mean its event happened: a sale,
a retained customer, a churned customer, a resolution), by externally reported outcomes
attributed to conversations (``OutcomeAttribution``), or, for handle time, measured.
Churn and handle time are minimised; the others are maximised.

>>> churn = KPI("churn", "churn", success_codes=frozenset({"cancelled"}))
>>> churn.binary, churn.direction
(True, 'minimize')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

KpiType = Literal[
    "sales_conversion",
    "retention",
    "churn",
    "sales_value",
    "handle_time",
    "first_contact_resolution",
]
Tracking = Literal["wrap_up", "outcome", "measured"]

DAY_MS = 86_400_000
_BINARY: frozenset[str] = frozenset(
    {"sales_conversion", "retention", "churn", "first_contact_resolution"}
)
_MINIMISED: frozenset[str] = frozenset({"churn", "handle_time"})


@dataclass(frozen=True, slots=True)
class KPI:
    name: str
    type: KpiType
    tracking: Tracking = "wrap_up"
    success_codes: frozenset[str] = frozenset()  # wrap-up codes meaning the event happened
    attribution_window_days: float = 30.0  # outcomes credited this long after a contact

    def __post_init__(self) -> None:
        where = f"KPI {self.name!r}"
        if self.type not in _BINARY | {"sales_value", "handle_time"}:
            raise ValueError(f"{where}: unknown type {self.type!r}")
        if self.tracking not in ("wrap_up", "outcome", "measured"):
            raise ValueError(f"{where}: unknown tracking {self.tracking!r}")
        if self.type == "handle_time" and self.tracking != "measured":
            raise ValueError(f"{where}: handle_time is measured (tracking: measured)")
        if self.type != "handle_time" and self.tracking == "measured":
            raise ValueError(f"{where}: only handle_time is measured; use wrap_up or outcome")
        if self.type == "sales_value" and self.tracking != "outcome":
            raise ValueError(f"{where}: sales_value needs tracking: outcome (a value)")
        if self.tracking == "wrap_up" and not self.success_codes:
            raise ValueError(f"{where}: tracking by wrap-up code needs success_codes")

    @property
    def binary(self) -> bool:
        """A rate (a 0/1 label) rather than an amount."""
        return self.type in _BINARY

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "minimize" if self.type in _MINIMISED else "maximize"


@dataclass(frozen=True, slots=True)
class Touchpoint:
    conversation_id: str
    agent_id: str
    medium: str
    value_share: float  # the share of the outcome's value credited to this contact
    at_ms: int


@dataclass(frozen=True, slots=True)
class OutcomeAttribution:
    """An outcome reported from outside (an order, a renewal) and the contacts it credits."""

    outcome_id: str
    customer_id: str
    value: float
    created_ms: int
    touchpoints: tuple[Touchpoint, ...]


def credit(attributions: Iterable[OutcomeAttribution], *, window_days: float) -> dict[str, float]:
    """Value credited per conversation: value × share, for touchpoints at most
    ``window_days`` before the outcome (and not after it)."""
    window = window_days * DAY_MS
    out: dict[str, float] = {}
    for a in attributions:
        for t in a.touchpoints:
            if 0 <= a.created_ms - t.at_ms <= window:
                out[t.conversation_id] = out.get(t.conversation_id, 0.0) + a.value * t.value_share
    return out


def label(
    kpi: KPI,
    *,
    wrap_up_code: str | None = None,
    attributed_value: float | None = None,
    handle_time_s: float | None = None,
) -> float | None:
    """The training label of one interaction, or None while it is unknown.

    For outcome tracking call it once the attribution window has closed:
    ``attributed_value`` None then means no outcome was credited (0, or 0.0 for value).
    """
    if kpi.type == "handle_time":
        return handle_time_s
    if kpi.tracking == "wrap_up":
        if wrap_up_code is None:
            return None
        return 1.0 if wrap_up_code in kpi.success_codes else 0.0
    if kpi.type == "sales_value":
        return attributed_value or 0.0
    return 0.0 if attributed_value is None else 1.0


@dataclass(frozen=True, slots=True)
class HistoryStats:
    days: float  # span of labelled history
    interactions: int  # labelled interactions
    successes: int  # of which the KPI's event happened (binary KPIs)
    agents_with_history: int  # agents with at least the threshold's interactions


@dataclass(frozen=True, slots=True)
class ReadinessThresholds:
    history_days: float = 90.0  # the anchor recommends 90 days
    interactions: int = 1000
    successes: int = 100  # for binary KPIs: as many successes and as many failures
    agents_with_history: int = 5
    agent_min_interactions: int = 30  # what "an agent with history" means


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    missing: tuple[str, ...]  # one sentence per unmet threshold


def history_stats(
    rows: Iterable[tuple[int, str, float]], thresholds: ReadinessThresholds
) -> HistoryStats:
    """Stats of labelled history rows ``(at_ms, agent_id, label)`` for :func:`readiness`."""
    first = last = None
    n = successes = 0
    per_agent: dict[str, int] = {}
    for at, agent, y in rows:
        first = at if first is None else min(first, at)
        last = at if last is None else max(last, at)
        n += 1
        successes += y > 0
        per_agent[agent] = per_agent.get(agent, 0) + 1
    days = (last - first) / DAY_MS if first is not None and last is not None else 0.0
    agents = sum(c >= thresholds.agent_min_interactions for c in per_agent.values())
    return HistoryStats(days, n, successes, agents)


def readiness(
    kpi: KPI, stats: HistoryStats, thresholds: ReadinessThresholds | None = None
) -> Readiness:
    """Whether a model for ``kpi`` may be trained on this history, and what is missing."""
    t = thresholds or ReadinessThresholds()
    missing: list[str] = []
    if stats.days < t.history_days:
        missing.append(f"{t.history_days:g} days of history needed, {stats.days:.1f} held")
    if stats.interactions < t.interactions:
        missing.append(f"{t.interactions} interactions needed, {stats.interactions} held")
    if kpi.binary:
        if stats.successes < t.successes:
            missing.append(f"{t.successes} successes needed, {stats.successes} held")
        failures = stats.interactions - stats.successes
        if failures < t.successes:
            missing.append(f"{t.successes} failures needed, {failures} held")
    if stats.agents_with_history < t.agents_with_history:
        missing.append(
            f"{t.agents_with_history} agents with ≥{t.agent_min_interactions} interactions "
            f"needed, {stats.agents_with_history} held"
        )
    return Readiness(not missing, tuple(missing))
