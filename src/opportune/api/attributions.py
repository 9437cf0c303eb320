"""Admin REST for outcome attributions: outcomes reported from outside (an order, a
renewal), credited to the interactions and agents that led to them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import Field

from opportune.api.auth import admin_router
from opportune.api.errors import error
from opportune.api.inputs import CamelIn, now_ms, to_ms
from opportune.core.kpis import Touchpoint
from opportune.engine.router import Router
from opportune.store import attributions as store


class TouchpointIn(CamelIn):
    conversation_id: str = Field(min_length=1, max_length=64)
    agent_id: str = Field(min_length=1, max_length=64)
    media_type: str = "chat"
    value_share: float = Field(default=1.0, ge=0, le=1)
    date: datetime | int


class AttributionIn(CamelIn):
    # The record's own id (idempotency); when absent, derived from what the record says.
    id: str | None = Field(default=None, min_length=1, max_length=128)
    outcome_id: str = Field(min_length=1, max_length=128)  # the KPI's (GET /v1/kpis)
    customer_id: str | None = Field(default=None, max_length=128)
    external_contact_id: str | None = Field(default=None, max_length=128)
    associated_value: float | None = Field(default=None, ge=0)
    created_date: datetime | int
    touchpoints: list[TouchpointIn] = Field(min_length=1, max_length=50)


class AttributionsIn(CamelIn):
    records: list[AttributionIn] = Field(min_length=1, max_length=1000)
    failure_threshold: float = Field(default=0.05, ge=0, le=1)


def record_id(rec: AttributionIn) -> str:
    """A record without an id is identified by what it says: the same outcome of the same
    customer at the same time crediting the same conversations is the same record."""
    who = rec.customer_id or f"ext:{rec.external_contact_id}"
    convs = ",".join(sorted(t.conversation_id for t in rec.touchpoints))
    text = f"{rec.outcome_id}\x00{who}\x00{to_ms(rec.created_date)}\x00{convs}"
    return "att-" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def problem(
    rec: AttributionIn, known: Mapping[str, str], handled_by: Mapping[str, str | None]
) -> str | None:
    """Why the record cannot be credited (None: it can). ``known``: the outcome ids of
    the outcome-tracked KPIs; ``handled_by``: each known conversation's agent."""
    if rec.outcome_id not in known:
        return (
            f"outcomeId {rec.outcome_id!r} is not the outcome id of a KPI tracked by outcome "
            "(GET /v1/kpis lists them)"
        )
    if not rec.customer_id and not rec.external_contact_id:
        return "customerId or externalContactId is required"
    if sum(t.value_share for t in rec.touchpoints) > 1.0 + 1e-9:
        return "the touchpoints' value shares add up to more than 1"
    for t in rec.touchpoints:
        if t.conversation_id not in handled_by:
            return f"conversation {t.conversation_id!r} is not known"
        agent = handled_by[t.conversation_id]
        if agent != t.agent_id:
            return (
                f"conversation {t.conversation_id!r} was handled by {agent!r}, not {t.agent_id!r}"
            )
    return None


def _record(rid: str, rec: AttributionIn) -> store.AttributionRecord:
    return store.AttributionRecord(
        id=rid,
        outcome_id=rec.outcome_id,
        customer_id=rec.customer_id,
        external_contact_id=rec.external_contact_id,
        value=rec.associated_value,
        created_ms=to_ms(rec.created_date),
        touchpoints=tuple(
            Touchpoint(t.conversation_id, t.agent_id, t.media_type, t.value_share, to_ms(t.date))
            for t in rec.touchpoints
        ),
    )


def _refused(unmatched: list[dict[str, Any]], body: AttributionsIn) -> Exception:
    failed = len(unmatched) / len(body.records)
    return error(
        422,
        "too_many_failures",
        f"{len(unmatched)} of {len(body.records)} records could not "
        f"be matched ({failed:.0%} > {body.failure_threshold:.0%}): nothing was stored",
        unmatched=unmatched,
    )


def attributions_router(*, router: Router, require_api_key: Callable[..., None]) -> APIRouter:
    api = admin_router(require_api_key, tags=["routing"])

    @api.post("/outcome-attributions")
    def attributions(body: AttributionsIn) -> dict[str, Any]:
        """Each record names the KPI's outcome id; idempotent by record id; refused whole
        past the failure threshold."""
        received = now_ms()
        accepted: list[store.AttributionRecord] = []
        duplicates: list[str] = []
        unmatched: list[dict[str, Any]] = []
        known = {d.outcome_id: d.name for d in router.kpis.values() if d.outcome_id is not None}
        ids = [rec.id or record_id(rec) for rec in body.records]
        convs = [t.conversation_id for rec in body.records for t in rec.touchpoints]
        with router.engine.begin() as conn:
            seen = store.known_ids(conn, ids)
            handled_by = store.handled_by(conn, convs)
            for i, (rid, rec) in enumerate(zip(ids, body.records, strict=True)):
                if rid in seen:
                    duplicates.append(rid)
                    continue
                why = problem(rec, known, handled_by)
                if why:
                    unmatched.append(
                        {"index": i, "id": rid, "outcomeId": rec.outcome_id, "reason": why}
                    )
                    continue
                seen.add(rid)  # a repeat later in the batch is a duplicate too
                accepted.append(_record(rid, rec))
            if len(unmatched) / len(body.records) > body.failure_threshold:
                raise _refused(unmatched, body)
            stored = store.insert(conn, accepted, received_ms=received)
        # Stored by another request between this one's check and its insert: a duplicate.
        duplicates += [r.id for r in accepted if r.id not in stored]
        accepted = [r for r in accepted if r.id in stored]
        return {
            "accepted": len(accepted),
            "ids": [r.id for r in accepted],
            "duplicates": duplicates,
            "unmatched": unmatched,
        }

    return api
