"""Admin REST for routing, one router over its nouns: agents' presence, interactions
(arrive, end with a wrap-up code, abandon), KPIs and their readiness, outcome
attributions, and each queue's service figures, comparison test and benefit assessment."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter

from opportune.api.agents import agents_router
from opportune.api.attributions import attributions_router
from opportune.api.interactions import JourneyFn, interactions_router
from opportune.api.kpis import kpis_router
from opportune.api.queues import queues_router
from opportune.engine.router import Router
from opportune.ml.routing.registry import RoutingRegistry


def routing_router(
    *,
    router: Router,
    require_api_key: Callable[..., None],
    journey: JourneyFn | None = None,
    registry: RoutingRegistry | None = None,
) -> APIRouter:
    """``journey(visitor_id, now_ms)``: the visitor's segments and scores as features."""
    api = APIRouter()
    shared = {"router": router, "require_api_key": require_api_key}
    api.include_router(agents_router(**shared))
    api.include_router(interactions_router(**shared, journey=journey))
    api.include_router(attributions_router(**shared))
    api.include_router(kpis_router(**shared))
    api.include_router(queues_router(**shared, registry=registry))
    return api
