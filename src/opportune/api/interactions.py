"""Admin REST for interactions: arrive (routed at once when an agent is free), read, end
with a wrap-up code, abandon. Every change answers with the assignments it made."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException
from pydantic import Field, field_validator

from opportune.api.auth import admin_router
from opportune.api.errors import error
from opportune.api.inputs import CamelIn, now_ms
from opportune.engine.router import Assigned, Router, RoutingError
from opportune.ml.routing.features import decode_features
from opportune.store import interactions as store

_ID = r"^[A-Za-z0-9_.:-]{1,64}$"
_FEATURE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")

T = TypeVar("T")
JourneyFn = Callable[[str, int], Awaitable[dict[str, float]]]


class InteractionIn(CamelIn):
    id: str = Field(pattern=_ID)
    queue: str
    medium: str = "chat"
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}$")
    priority: int = Field(default=0, ge=-100, le=100)
    customer_id: str | None = Field(default=None, max_length=128)
    visitor_id: str | None = Field(default=None, max_length=64)
    # Numbers the caller knows of the customer (CRM fields, value, tenure), by name; a
    # list is accepted too (named x0, x1, …).
    features: list[float] | dict[str, float] = Field(
        default_factory=list,
        max_length=200,
        # What ``_names`` checks, said in the OpenAPI document: the names' form.
        json_schema_extra={"propertyNames": {"pattern": _FEATURE.pattern}},
    )

    @field_validator("features")
    @classmethod
    def _names(cls, v: list[float] | dict[str, float]) -> list[float] | dict[str, float]:
        for k, x in v.items() if isinstance(v, dict) else enumerate(v):
            if isinstance(k, str) and not _FEATURE.match(k):
                raise ValueError(f"feature name {k!r}: letters, digits, _ . - (1-64)")
            if not math.isfinite(x):
                raise ValueError(f"feature {k!r} is not a finite number")
        return v


class EndIn(CamelIn):
    wrap_up_code: str | None = Field(default=None, max_length=64)


def routing_error(exc: RoutingError) -> HTTPException:
    extra = {"path": exc.path} if exc.path else {}
    return error(exc.status, exc.code, exc.message, **extra)


def routed(change: Callable[..., T], *args: Any) -> T:
    """Run a change of the routing state; a refusal becomes its error answer."""
    try:
        return change(*args)
    except RoutingError as exc:
        raise routing_error(exc) from None


def assigned_json(made: list[Assigned]) -> list[dict[str, Any]]:
    return [
        {
            "interactionId": x.interaction_id,
            "agentId": x.agent_id,
            "method": x.method,
            "arm": x.arm,
            "propensity": x.propensity,
            "why": x.why,
        }
        for x in made
    ]


def interaction_json(router: Router, interaction_id: str) -> dict[str, Any]:
    """The interaction with the decision that routed it; 404 when unknown."""
    with router.engine.connect() as conn:
        r = store.get(conn, interaction_id)
    if r is None:
        raise error(404, "not_found", f"interaction {interaction_id!r}")
    return {
        "id": r.id,
        "queue": r.queue,
        "medium": r.medium,
        "status": r.status,
        "arrivedAt": r.arrived_at,
        "assignedAt": r.assigned_at,
        "agentId": r.agent_id,
        "endedAt": r.ended_at,
        "wrapUpCode": r.wrap_up_code,
        "arm": r.arm,
        "method": r.method,
        "propensity": r.propensity,
        "scores": json.loads(r.scores) if r.scores else [],
        "candidates": json.loads(r.candidates) if r.candidates else [],
        "heldSince": r.held_since,
        "features": decode_features(r.features),
        "why": r.why,
    }


def interactions_router(
    *, router: Router, require_api_key: Callable[..., None], journey: JourneyFn | None = None
) -> APIRouter:
    """``journey(visitor_id, now_ms)``: the visitor's segments and scores as features."""
    api = admin_router(require_api_key, tags=["routing"])

    @api.post("/interactions", status_code=201)
    async def arrive(body: InteractionIn) -> dict[str, Any]:
        at = now_ms()
        data = body.model_dump()
        if body.visitor_id and journey is not None:
            data["journey"] = await journey(body.visitor_id, at)
        made = await asyncio.to_thread(routed, router.arrive, data, at)
        return {"interaction": interaction_json(router, body.id), "assigned": assigned_json(made)}

    @api.get("/interactions/{interaction_id}")
    def interaction(interaction_id: str) -> dict[str, Any]:
        return interaction_json(router, interaction_id)

    @api.post("/interactions/{interaction_id}/end")
    def end(interaction_id: str, body: EndIn) -> dict[str, Any]:
        made = routed(router.end, interaction_id, body.wrap_up_code, now_ms())
        return {
            "interaction": interaction_json(router, interaction_id),
            "assigned": assigned_json(made),
        }

    @api.post("/interactions/{interaction_id}/abandon")
    def abandon(interaction_id: str) -> dict[str, Any]:
        routed(router.abandon, interaction_id, now_ms())
        return {"interaction": interaction_json(router, interaction_id)}

    return api
