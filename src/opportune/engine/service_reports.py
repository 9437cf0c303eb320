"""The contact centre's reports: queues (offered, answered, abandoned, ASA, AHT, service
level against each queue's target), agents (handled, AHT, KPI rate), and predictive
against standard routing per queue.

Service figures are ``core.routing``'s; a KPI label is ``store.routing_history``'s (the
one training reads); the comparison is ``core.valuation.compare`` as in
``GET /v1/queues/{name}/comparison``. Definitions: docs/reports.md.

>>> queue_row("loans", [], QueueInfo(target_s=20.0))
['loans', 0, 0, 0, 0, None, None, None, None, 20.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.engine import Connection

from opportune.core.kpis import KPI
from opportune.core.routing import average_speed_of_answer, service_level
from opportune.core.valuation import compare, summarise
from opportune.engine.reports import Definitions, Report, Table, Window, ratio
from opportune.ml.routing.features import HistoryRow
from opportune.store import reports as q
from opportune.store.routing_history import load_history


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue as its reports need it: its service-level target and its KPI, if any."""

    target_s: float = 20.0
    kpi: KPI | None = None


QUEUE_COLUMNS: Final = (
    "queue", "offered", "answered", "abandoned", "waiting", "abandonRate", "asaS", "ahtS",
    "serviceLevel", "targetS",
)  # fmt: skip


def _wait_s(r: q.InteractionRow) -> float | None:
    return (r.assigned_at - r.arrived_at) / 1000 if r.assigned_at is not None else None


def _gave_up_s(r: q.InteractionRow) -> float | None:
    if r.status == "abandoned" and r.assigned_at is None and r.ended_at is not None:
        return (r.ended_at - r.arrived_at) / 1000
    return None


def _handle_s(r: q.InteractionRow) -> float | None:
    if r.status == "ended" and r.assigned_at is not None and r.ended_at is not None:
        return (r.ended_at - r.assigned_at) / 1000
    return None


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def queue_row(name: str, rows: Sequence[q.InteractionRow], info: QueueInfo) -> list[Any]:
    """One queue's service figures over ``rows`` (its interactions that arrived)."""
    waits = [w for r in rows if (w := _wait_s(r)) is not None]
    gave_up = [g for r in rows if (g := _gave_up_s(r)) is not None]
    handles = [h for r in rows if (h := _handle_s(r)) is not None]
    answered_or_left = len(waits) + len(gave_up)
    return [
        name,
        len(rows),
        len(waits),
        len(gave_up),
        sum(1 for r in rows if r.status == "waiting"),
        ratio(len(gave_up), answered_or_left),
        round(average_speed_of_answer(waits), 3) if waits else None,
        _mean(handles),
        round(service_level(waits, gave_up, info.target_s), 4) if answered_or_left else None,
        info.target_s,
    ]


def _labelled(conn: Connection, w: Window, queue: str, kpi: KPI, now_ms: int) -> list[HistoryRow]:
    rows = load_history(conn, queue, kpi, now_ms=now_ms, since_ms=w.start_ms)
    return [r for r in rows if r.arrived_at < w.end_ms]


def _agents(
    conn: Connection, w: Window, d: Definitions, rows: Sequence[q.InteractionRow], now_ms: int
) -> Table:
    """Per agent and queue: answered, handled, AHT, and the queue's KPI rate (the mean
    label of their labelled interactions: a rate for yes/no KPIs, a mean for amounts)."""
    by: dict[tuple[str, str], list[q.InteractionRow]] = {}
    for r in rows:
        if r.agent_id:
            by.setdefault((r.agent_id, r.queue), []).append(r)
    labels: dict[tuple[str, str], list[float]] = {}
    for queue in sorted({qq for _, qq in by}):
        info = d.queues.get(queue)
        if info is not None and info.kpi is not None:
            for row in _labelled(conn, w, queue, info.kpi, now_ms):
                labels.setdefault((row.agent_id, queue), []).append(row.label)
    out = []
    for (agent, queue), mine in sorted(by.items()):
        info = d.queues.get(queue)
        kpi = info.kpi if info is not None else None
        ys = labels.get((agent, queue), [])
        handles = [h for r in mine if (h := _handle_s(r)) is not None]
        out.append([
            agent, queue, sum(1 for r in mine if r.assigned_at is not None), len(handles),
            _mean(handles), kpi.name if kpi else None, len(ys),
            round(sum(ys), 4) if ys else 0, _mean(ys) if ys else None,
        ])  # fmt: skip
    return Table(
        ("agent", "queue", "answered", "handled", "ahtS", "kpi", "labelled", "kpiTotal", "kpiRate"),
        out,
    )


def _union(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif a < b:
            out.append((a, b))
    return out


def occupancy(
    changes: Sequence[tuple[int, str]], held: Sequence[tuple[int, int]], start: int, end: int
) -> tuple[int, int]:
    """``(signed in, busy)`` in ms over ``[start, end)``: signed in while the presence in
    force is not ``offline``; busy while signed in and holding at least one interaction
    (two chats at once are busy once).

    >>> occupancy([(0, "available"), (60, "offline")], [(10, 30), (20, 40), (50, 90)], 0, 100)
    (60, 40)
    """
    bounds = [*changes[1:], (end, "")]
    signed = [
        (max(a, start), min(b, end))
        for (a, p), (b, _) in zip(changes, bounds, strict=True)
        if p != "offline" and min(b, end) > max(a, start)
    ]
    busy = 0
    for a, b in _union(held):
        for s, e in signed:
            busy += max(0, min(b, e) - max(a, s))
    return sum(e - s for s, e in signed), busy


def _occupancy(conn: Connection, w: Window, now_ms: int) -> Table:
    """Per agent: time signed in, time busy on interactions meanwhile, and their ratio."""
    end = min(w.end_ms, max(now_ms, w.start_ms))
    r = q.Range(w.start_ms, end)
    changes, held = q.presence_history(conn, r), q.handling_spans(conn, r, now_ms)
    rows = []
    for agent in sorted(set(changes) | set(held)):
        signed, busy = occupancy(changes.get(agent, []), held.get(agent, []), r.start_ms, end)
        rows.append([agent, round(signed / 1000, 3), round(busy / 1000, 3), ratio(busy, signed)])
    return Table(("agent", "signedInS", "busyS", "occupancy"), rows)


def queues(
    conn: Connection, w: Window, d: Definitions, site: str | None = None, *, now_ms: int = 0
) -> Report:
    """Queues' service over the range and over time, and agents' figures."""
    rows = q.interactions_in(conn, w.range())
    names = sorted({r.queue for r in rows} | set(d.queues))
    by_queue = {n: [r for r in rows if r.queue == n] for n in names}
    summary = [queue_row(n, by_queue[n], d.queues.get(n, QueueInfo())) for n in names]
    over = []
    buckets = w.buckets()
    for n in names:
        per: dict[str, list[q.InteractionRow]] = {}
        for r in by_queue[n]:
            per.setdefault(w.label(r.arrived_at // q.QUARTER_MS), []).append(r)
        for b in buckets:
            over.append([b, *queue_row(n, per.get(b, []), d.queues.get(n, QueueInfo()))])
    return Report(
        "queues",
        {
            "queues": Table(QUEUE_COLUMNS, summary),
            "overTime": Table(("bucket", *QUEUE_COLUMNS), over),
            "agents": _agents(conn, w, d, rows, now_ms or w.end_ms),
            "occupancy": _occupancy(conn, w, now_ms or w.end_ms),
        },
    )


def _arm(h: HistoryRow) -> str | None:
    """The comparison's group of an interaction (warm-up slices are not measured)."""
    if h.arm == "predictive":
        return "predictive"
    return "standard" if h.arm in ("standard", "control") else None


ROUTING_COLUMNS: Final = (
    "queue", "kpi", "predictive", "predictiveRate", "standard", "standardRate", "uplift",
    "ciLow", "ciHigh", "pValue", "waitCostS", "handleCostS",
)  # fmt: skip


def routing(
    conn: Connection, w: Window, d: Definitions, site: str | None = None, *, now_ms: int = 0
) -> Report:
    """Predictive against standard routing per queue with a KPI: each arm's KPI rate, the
    uplift with its 95% interval, and each arm's rate over time."""
    summary, over = [], []
    for name, info in sorted(d.queues.items()):
        if info.kpi is None:
            continue
        rows = _labelled(conn, w, name, info.kpi, now_ms or w.end_ms)
        arms: dict[str, list[HistoryRow]] = {"predictive": [], "standard": []}
        per: dict[tuple[str, str], list[float]] = {}
        for h in rows:
            arm = _arm(h)
            if arm is not None:
                arms[arm].append(h)
                b = w.label(h.arrived_at // q.QUARTER_MS)
                per.setdefault((b, arm), []).append(h.label)
        p, s = arms["predictive"], arms["standard"]
        row: list[Any] = [name, info.kpi.name, len(p), _mean([h.label for h in p])]
        row += [len(s), _mean([h.label for h in s])]
        if p and s:
            c = compare(
                summarise([h.label for h in p], [h.wait_s for h in p], [h.handle_s for h in p]),
                summarise([h.label for h in s], [h.wait_s for h in s], [h.handle_s for h in s]),
                binary=info.kpi.binary,
            )
            row += [round(c.uplift, 4), round(c.ci_low, 4), round(c.ci_high, 4)]
            row += [round(c.p_value, 4), round(c.wait_cost_s, 3), round(c.handle_cost_s, 3)]
        else:
            row += [None] * 6
        summary.append(row)
        for b in w.buckets():
            ys_p, ys_s = per.get((b, "predictive"), []), per.get((b, "standard"), [])
            over.append([b, name, len(ys_p), _mean(ys_p), len(ys_s), _mean(ys_s)])
    return Report(
        "routing",
        {
            "comparison": Table(ROUTING_COLUMNS, summary),
            "overTime": Table(
                ("bucket", "queue", "predictive", "predictiveRate", "standard", "standardRate"),
                over,
            ),
        },
    )
