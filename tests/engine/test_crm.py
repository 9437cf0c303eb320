"""CRM calls that cannot be made are results the panel shows, never exceptions: a secret
not set, a template the sandbox refuses, a CRM nobody listens at, a path with no base; and
the demo's stand-in CRM, called over real HTTP through the ASGI app it is part of."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx

from opportune.api.app import DEMO_DIR
from opportune.api.demo import demo_site
from opportune.engine.crm import CrmClient
from opportune.workspace.crm import CrmDoc

CONTEXT: dict[str, Any] = {
    "customer": {"email": "ana@example.com", "name": "Ana"},
    "conversation": {"id": "c1"},
    "agent": {"name": "Dev"},
    "lead": {"id": None},
    "fields": {"notes": "hi"},
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(doc: dict[str, Any], op: str = "lookup", **kw: Any) -> dict[str, Any]:
    client = CrmClient(secrets={}, **kw)
    crm = CrmDoc.model_validate({"name": "c", **doc})
    return asyncio.run(client.call(crm, op, CONTEXT)).to_json()


def test_calls_that_cannot_be_made_say_why() -> None:
    secret = _call({"lookup": {"url": "http://127.0.0.1:9/x", "headers": {"A": "${secret:NOPE}"}}})
    assert secret["error"]["code"] == "missing_secret" and "NOPE" in secret["error"]["message"]
    sandbox = _call({"lookup": {"url": "http://x/{{ ''.__class__.__mro__ }}"}})
    assert sandbox["error"]["code"] == "bad_template"
    port = _closed_port()
    down = _call({"lookup": {"url": f"http://127.0.0.1:{port}/leads"}})
    assert down["error"]["code"] == "unreachable" and not down["ok"]
    path = _call({"lookup": {"url": "/demo/crm/leads"}})
    assert path["error"]["code"] == "bad_url"
    missing = _call({"lookup": {"url": "/x"}}, "create")
    assert missing["error"]["code"] == "not_configured"


def test_the_demo_crm_creates_finds_and_updates_a_lead() -> None:
    transport = httpx.ASGITransport(app=demo_site(DEMO_DIR))
    doc = {
        "lookup": {"url": "http://demo/crm/leads?email={{ customer.email | urlencode }}"},
        "create": {
            "method": "POST",
            "url": "http://demo/crm/leads",
            "body": {"email": "{{ customer.email }}", "notes": "{{ fields.notes }}"},
        },
        "update": {
            "method": "PATCH",
            "url": "http://demo/crm/leads/{{ lead.id }}",
            "body": {"status": "won", "notes": "{{ fields.missing }}"},
        },
    }
    crm = CrmDoc.model_validate({"name": "c", **doc})
    client = CrmClient(secrets={}, transport=transport)

    async def run() -> list[dict[str, Any]]:
        out = [(await client.call(crm, "lookup", CONTEXT)).to_json()]
        out.append((await client.call(crm, "create", CONTEXT)).to_json())
        ctx = {**CONTEXT, "lead": {"id": out[-1]["leadId"]}}
        out.append((await client.call(crm, "update", ctx)).to_json())
        out.append((await client.call(crm, "lookup", CONTEXT)).to_json())
        return out

    none, created, updated, found = asyncio.run(run())
    assert none["ok"] and none["found"] is False
    assert created["status"] == 201 and created["leadId"] == "L-00001"
    # An update leaves out what the template did not fill (None), and keeps the notes.
    assert updated["lead"] == {
        "email": "ana@example.com",
        "notes": "hi",
        "id": "L-00001",
        "status": "won",
    }
    assert found["found"] and found["lead"]["status"] == "won"


def test_the_demo_crm_refuses_what_a_crm_would() -> None:
    transport = httpx.ASGITransport(app=demo_site(DEMO_DIR))

    async def run() -> list[int]:
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as c:
            return [
                (await c.get("/crm/leads")).status_code,
                (await c.patch("/crm/leads/L-9", json={"a": 1})).status_code,
                (await c.post("/crm/leads", content=b"x" * 20_000)).status_code,
                (await c.post("/crm/leads", json={"a": {"nested": 1}})).status_code,
                (await c.post("/crm/leads", content=b"{nope")).status_code,
            ]

    assert asyncio.run(run()) == [422, 404, 413, 422, 400]
