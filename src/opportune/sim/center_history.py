"""A simulated contact centre's history in the database, as the server would have stored it.

``opportune simulate contact-center --history`` writes a run (usually standard routing,
before predictive routing is switched on) into the ``interactions`` and outcome-attribution
tables, and the center's queue, agents and KPI as workspace YAML, so ``opportune train
routing`` and the benefit assessment run on it exactly as on a real queue's history — and,
unlike on real history, the truth is known to check them against.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Engine, delete

from opportune.core.kpis import OutcomeAttribution
from opportune.sim.center import OTHER_CODES, SALE, SKILL, Center
from opportune.sim.contact_center import InteractionRecord, SimResult
from opportune.store.schema import attribution_touchpoints, interactions, outcome_attributions
from opportune.workspace.engagement import kpi_outcome_id

QUEUE = "sales"
KPI_NAME = "sales-conversion"


def customer_features(x: Iterable[float]) -> dict[str, float]:
    """The features a CRM would post with the call (``x0``, ``x1``, …), plus identity."""
    return {**{f"x{i}": round(float(v), 6) for i, v in enumerate(x)}, "identified": 1.0}


def write_history(
    engine: Engine, result: SimResult, *, queue: str = QUEUE, shift_ms: int = 0
) -> int:
    """Store ``result``'s interactions and attributions (replacing the queue's), every time
    moved by ``shift_ms`` (e.g. to end the history now); return how many were written."""
    rows = [_interaction_row(r, queue, shift_ms) for r in result.records]
    atts, tps = _attribution_rows(result.attributions, shift_ms)
    with engine.begin() as conn:
        _delete_queue(conn, queue, [r["id"] for r in rows])
        if rows:
            conn.execute(interactions.insert(), rows)
        if atts:
            conn.execute(outcome_attributions.insert(), atts)
            conn.execute(attribution_touchpoints.insert(), tps)
    return len(rows)


def _shifted(ms: int | None, shift_ms: int) -> int | None:
    return None if ms is None else ms + shift_ms


def _interaction_row(r: InteractionRecord, queue: str, shift_ms: int) -> dict[str, Any]:
    """One interaction as the router stores it, on the permanent control arm."""
    d = r.decision
    answered = r.answered_ms is not None
    ended = r.answered_ms + round(r.handle_s * 1000) if r.answered_ms is not None else None
    return {
        "id": r.id,
        "queue": queue,
        "medium": "voice",
        "language": r.language,
        "priority": 0,
        "customer_id": r.customer_id,
        "visitor_id": None,
        "features": json.dumps(customer_features(r.x)),
        "status": "ended" if answered else "abandoned",
        "arrived_at": _shifted(r.arrived_ms, shift_ms),
        "assigned_at": _shifted(r.answered_ms, shift_ms),
        "agent_id": r.agent_id,
        "ended_at": _shifted(ended if answered else r.abandoned_ms, shift_ms),
        "wrap_up_code": r.wrap_up,
        "arm": "control",
        "method": d.method if d else None,
        "propensity": d.propensity if d else None,
        "scores": json.dumps([list(s) for s in d.scores]) if d else None,
        "why": d.why[:500] if d else None,
        "candidates": json.dumps(list(d.candidates)) if d else None,
        "held_since": None,
    }


def _attribution_rows(
    attributions: Iterable[OutcomeAttribution], shift_ms: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The outcome attributions and their touchpoints as table rows."""
    atts, tps = [], []
    for a in attributions:
        created = _shifted(a.created_ms, shift_ms)
        atts.append(
            {
                "id": a.outcome_id,
                "outcome_id": kpi_outcome_id(KPI_NAME),
                "customer_id": a.customer_id,
                "external_contact_id": None,
                "value": a.value,
                "created_at": created,
                "received_at": created,
            }
        )
        tps += [
            {
                "attribution_id": a.outcome_id,
                "conversation_id": t.conversation_id,
                "agent_id": t.agent_id,
                "medium": t.medium,
                "value_share": t.value_share,
                "at": _shifted(t.at_ms, shift_ms),
            }
            for t in a.touchpoints
        ]
    return atts, tps


def _delete_queue(conn: Connection, queue: str, ids: list[str]) -> None:
    """The queue's interactions, and the attributions of the ids about to be written."""
    conn.execute(delete(interactions).where(interactions.c.queue == queue))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        conn.execute(
            delete(attribution_touchpoints).where(
                attribution_touchpoints.c.conversation_id.in_(chunk)
            )
        )
        conn.execute(
            delete(outcome_attributions).where(
                outcome_attributions.c.id.in_([f"o-{i}" for i in chunk])
            )
        )


def workspace_yaml(center: Center, *, queue: str = QUEUE, predictive: bool = True) -> str:
    """The center's queue, KPI and agents as workspace documents."""
    c = center.config
    codes = [SALE, *(code for code, _ in OTHER_CODES)]
    docs = [
        f"kind: kpi\nname: {KPI_NAME}\ntype: sales_conversion\ntracking: wrapUp\n"
        f"successCodes: [{SALE}]\n",
        f"kind: queue\nname: {queue}\nmedia: [{c.medium}]\n"
        f"skills: [{{skill: {SKILL}, minProficiency: 1}}]\nlanguage: en\n"
        f"rings:\n  - {{afterWait: {int(c.language_ring_s)}s, "
        f"skills: [{{skill: {SKILL}, minProficiency: 1}}], requireLanguage: false}}\n"
        f"wrapUpCodes: [{', '.join(codes)}]\nkpi: {KPI_NAME}\n"
        f"predictive: {{enabled: {'true' if predictive else 'false'}, method: assignment, "
        f"minFreeAgents: 1, controlShare: 0.2}}\n",
    ]
    for a in center.agents:
        docs.append(
            f"kind: agent\nname: {a.id}\nskills: {{{SKILL}: {a.proficiency}}}\n"
            f"languages: [{', '.join(sorted(a.languages))}]\n"
            f"capacity: {{{c.medium}: {c.capacity}}}\n"
        )
    return "---\n".join(docs)
