"""A queue's labelled history read back for its KPI model, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Engine

from opportune.core.kpis import KPI
from opportune.store.routing_history import StoredRoutingHistory, load_history
from opportune.store.schema import attribution_touchpoints, interactions, outcome_attributions
from opportune.workspace.engagement import kpi_outcome_id

DAY = 86_400_000


def test_outcome_kpis_count_only_their_own_attributions_once_the_window_closed(
    engine: Engine,
) -> None:
    base = {"queue": "q", "medium": "chat", "priority": 0, "status": "ended", "agent_id": "a"}
    with engine.begin() as conn:
        for i, at in enumerate((0, 0, 0, 50 * DAY)):
            conn.execute(
                interactions.insert().values(
                    id=f"i{i}", arrived_at=at, assigned_at=at, ended_at=at + 1000, **base
                )
            )
        for rid, kpi, conv in (("r1", "value", "i0"), ("r2", "other", "i1"), ("r3", "value", "i3")):
            conn.execute(
                outcome_attributions.insert().values(
                    id=rid, outcome_id=kpi_outcome_id(kpi), value=100.0, created_at=DAY,
                    received_at=DAY,
                )
            )  # fmt: skip
            conn.execute(
                attribution_touchpoints.insert().values(
                    attribution_id=rid, conversation_id=conv, agent_id="a", medium="chat",
                    value_share=0.5, at=0,
                )
            )  # fmt: skip
    kpi = KPI("value", "sales_value", "outcome", attribution_window_days=30)
    with engine.connect() as conn:
        rows = load_history(conn, "q", kpi, now_ms=60 * DAY)
    # i3 ended 10 days ago: its window is open, so it has no label yet. i1's attribution
    # belongs to another KPI, and i2 had none: both 0 of value.
    assert {r.id: r.label for r in rows} == {"i0": 50.0, "i1": 0.0, "i2": 0.0}
    assert StoredRoutingHistory(engine).rows("q", kpi, now_ms=60 * DAY) == rows
