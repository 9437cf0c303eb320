"""Admin REST for agents: who is there with what skills and load, and presence changes
(a change to ``available`` routes what waits at once)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from opportune.api.auth import admin_router
from opportune.api.inputs import CamelIn, now_ms
from opportune.api.interactions import assigned_json, routed
from opportune.engine.router import Router


class PresenceIn(CamelIn):
    presence: str


def agents_router(*, router: Router, require_api_key: Callable[..., None]) -> APIRouter:
    api = admin_router(require_api_key, tags=["routing"])

    @api.get("/agents")
    def agents() -> dict[str, Any]:
        with router.engine.connect() as conn:
            live = router.agents(conn)
        return {
            "items": [
                {
                    "id": a.id,
                    "displayName": router.agent_docs[a.id].display_name,
                    "presence": a.presence,
                    "skills": dict(a.skills),
                    "languages": sorted(a.languages),
                    "capacity": dict(a.capacity),
                    "load": dict(a.load),
                    "idleSince": a.idle_since_ms or None,
                }
                for a in live
            ]
        }

    @api.put("/agents/{agent_id}/presence")
    def presence(agent_id: str, body: PresenceIn) -> dict[str, Any]:
        made = routed(router.presence, agent_id, body.presence, now_ms())
        return {"agentId": agent_id, "presence": body.presence, "assigned": assigned_json(made)}

    return api
