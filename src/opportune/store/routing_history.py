"""A queue's routing history read back for its KPI model: ended interactions whose KPI
label is known, with what routing knew at their arrival.

A row is *labelled* once its KPI is known: at the wrap-up for wrap-up KPIs, at the end for
handle time, and for outcome-tracked KPIs only once the attribution window has closed
(until then "no outcome yet" is not "no outcome"), from the attributions posted with the
KPI's own outcome id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Engine, and_, select
from sqlalchemy.engine import Connection

from opportune.core.kpis import DAY_MS, KPI, OutcomeAttribution, Touchpoint, credit, label
from opportune.ml.routing.features import HistoryRow, decode_features
from opportune.store.schema import attribution_touchpoints, interactions, outcome_attributions
from opportune.workspace.engagement import kpi_outcome_id


def load_history(
    conn: Connection, queue: str, kpi: KPI, *, now_ms: int, since_ms: int = 0
) -> list[HistoryRow]:
    """Ended interactions of ``queue`` since ``since_ms`` whose KPI label is known, oldest
    first."""
    rows = conn.execute(
        select(interactions)
        .where(
            and_(
                interactions.c.queue == queue,
                interactions.c.status == "ended",
                interactions.c.arrived_at >= since_ms,
            )
        )
        .order_by(interactions.c.arrived_at, interactions.c.id)
    ).all()
    credited: dict[str, float] = {}
    if kpi.tracking == "outcome" and rows:
        credited = _credited(conn, [r.id for r in rows], kpi)
    window_ms = kpi.attribution_window_days * DAY_MS
    out = []
    for r in rows:
        if not r.agent_id:
            continue
        ended = r.ended_at or r.arrived_at
        if kpi.tracking == "outcome" and ended + window_ms > now_ms:
            continue  # the window is open: an outcome may still be attributed
        handle = (r.ended_at - r.assigned_at) / 1000 if r.assigned_at and r.ended_at else 0.0
        y = label(
            kpi,
            wrap_up_code=r.wrap_up_code,
            attributed_value=credited.get(r.id),
            handle_time_s=handle,
        )
        if y is None:
            continue
        out.append(
            HistoryRow(
                id=r.id,
                arrived_at=r.arrived_at,
                ended_at=ended,
                agent_id=r.agent_id,
                label=float(y),
                arm=r.arm or "",
                method=r.method or "",
                propensity=float(r.propensity if r.propensity is not None else 1.0),
                wait_s=(r.assigned_at - r.arrived_at) / 1000 if r.assigned_at else 0.0,
                handle_s=handle,
                language=r.language,
                features=decode_features(r.features),
                candidates=tuple(json.loads(r.candidates)) if r.candidates else (),
            )
        )
    return out


def _credited(conn: Connection, ids: Sequence[str], kpi: KPI) -> dict[str, float]:
    found: dict[str, list[Touchpoint]] = {}
    meta: dict[str, tuple[str, float, int]] = {}
    for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
        chunk = list(ids[start : start + 500])
        for r in conn.execute(
            select(
                outcome_attributions.c.id,
                outcome_attributions.c.customer_id,
                outcome_attributions.c.value,
                outcome_attributions.c.created_at,
                attribution_touchpoints.c.conversation_id,
                attribution_touchpoints.c.agent_id,
                attribution_touchpoints.c.medium,
                attribution_touchpoints.c.value_share,
                attribution_touchpoints.c.at,
            )
            .select_from(
                attribution_touchpoints.join(
                    outcome_attributions,
                    outcome_attributions.c.id == attribution_touchpoints.c.attribution_id,
                )
            )
            .where(
                attribution_touchpoints.c.conversation_id.in_(chunk),
                outcome_attributions.c.outcome_id == kpi_outcome_id(kpi.name),
            )
        ):
            meta[r[0]] = (r[1] or "", float(r[2] or 0.0), int(r[3]))
            found.setdefault(r[0], []).append(Touchpoint(r[4], r[5], r[6], float(r[7]), int(r[8])))
    records = [
        OutcomeAttribution(oid, meta[oid][0], meta[oid][1], meta[oid][2], tuple(tps))
        for oid, tps in found.items()
    ]
    # Binary KPIs only ask whether an outcome was credited; the value matters for amounts.
    return credit(records, window_days=kpi.attribution_window_days)


class StoredRoutingHistory:
    """The database as training's :class:`~opportune.ml.routing.features.RoutingHistory`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def rows(self, queue: str, kpi: KPI, *, now_ms: int, since_ms: int = 0) -> list[HistoryRow]:
        """:func:`load_history` on a connection of its own."""
        with self.engine.connect() as conn:
            return load_history(conn, queue, kpi, now_ms=now_ms, since_ms=since_ms)
