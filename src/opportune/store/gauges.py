"""The database's counts a metrics scrape reads: interactions waiting per queue and webhook
calls waiting in the outbox. Facts of the shared database, so every process answers the
same (``/metrics``, docs/deployment.md)."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from opportune.store.schema import interactions, webhook_deliveries


def queue_sizes(engine: Engine) -> tuple[dict[str, int], int]:
    """Interactions waiting, per queue; webhook calls pending (not yet sent nor dead)."""
    i, w = interactions.c, webhook_deliveries.c
    with engine.connect() as conn:
        waiting = conn.execute(
            select(i.queue, func.count()).where(i.status == "waiting").group_by(i.queue)
        ).all()
        pending = conn.execute(
            select(func.count()).select_from(webhook_deliveries).where(w.status == "pending")
        ).scalar_one()
    return {str(q): int(n) for q, n in waiting}, int(pending)
