"""Calls to the workspace's CRM (``kind: crm``) for the agent's CRM panel: look up, create or
update the lead of the customer in a chat, and say what came of it.

A call is made when the agent asks, on its own HTTP request, with the document's short
timeout: the chat (its sockets and messages) never waits for a CRM. Nothing of it is
stored: the answer goes back to the panel, and the log gets the operation and the failure's
code only (never the headers, which carry secrets, nor the customer's data).

>>> lead_of({"items": [{"id": "L1", "email": "a@b.c"}]}, "id")
({'id': 'L1', 'email': 'a@b.c'}, 'L1')
>>> lead_of([], "id")
(None, None)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urljoin

import httpx
from jinja2 import TemplateError

from opportune.engine.engagement import render
from opportune.engine.webhooks import MissingSecret, resolve_secrets
from opportune.workspace.crm import CrmDoc

log = logging.getLogger(__name__)
MAX_FIELDS: Final = 40  # of a lead shown in the panel
MAX_TEXT: Final = 500
_LISTS: Final = ("items", "leads", "results", "data", "records")


@dataclass(frozen=True, slots=True)
class CrmResult:
    """What came of one call: the lead found or written, or the failure in words."""

    operation: str
    ok: bool
    status: int | None = None
    lead: dict[str, Any] | None = None
    lead_id: str | None = None
    error: dict[str, str] | None = None
    elapsed_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "ok": self.ok,
            "found": self.lead is not None if self.ok else None,
            "status": self.status,
            "lead": self.lead,
            "leadId": self.lead_id,
            "error": self.error,
            "elapsedMs": self.elapsed_ms,
        }


def _shown(value: Any) -> Any:
    """A lead's field as the panel shows it: scalars, long texts cut, nesting as JSON."""
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    return _shown(json.dumps(value, ensure_ascii=False))


def lead_of(answer: Any, id_field: str) -> tuple[dict[str, Any] | None, str | None]:
    """The lead in a CRM's answer (an object, a list of them, or a list under ``items``,
    ``leads``…; the first one) and its id."""
    if isinstance(answer, dict):
        for key in _LISTS:
            if isinstance(answer.get(key), list):
                answer = answer[key]
                break
    if isinstance(answer, list):
        answer = answer[0] if answer else None
    if not isinstance(answer, dict) or not answer:
        return None, None
    lead = {str(k): _shown(v) for k, v in list(answer.items())[:MAX_FIELDS]}
    ident = answer.get(id_field)
    return lead, (str(ident) if ident is not None else None)


def _failure(operation: str, code: str, message: str, status: int | None = None) -> CrmResult:
    return CrmResult(operation, False, status, error={"code": code, "message": message[:300]})


class CrmClient:
    """Makes the CRM's calls. A call is an agent's click, so each opens its own connection:
    nothing is held between calls and there is nothing to close at shutdown."""

    def __init__(
        self, *, secrets: Mapping[str, str], transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.secrets = secrets
        self._transport = transport

    async def call(
        self,
        doc: CrmDoc,
        operation: str,
        context: Mapping[str, Any],
        *,
        base_url: str | None = None,
    ) -> CrmResult:
        """Make ``operation``'s call with ``context`` (visitor, customer, conversation,
        agent, lead, fields); a failure is a result, never an exception."""
        started = time.monotonic()
        result = await self._call(doc, operation, context, base_url)
        elapsed = int((time.monotonic() - started) * 1000)
        if not result.ok and result.error is not None:
            log.warning("crm %s %s failed: %s", doc.name, operation, result.error["code"])
        return CrmResult(
            result.operation,
            result.ok,
            result.status,
            result.lead,
            result.lead_id,
            result.error,
            elapsed,
        )

    async def _call(
        self, doc: CrmDoc, operation: str, context: Mapping[str, Any], base_url: str | None
    ) -> CrmResult:
        spec = doc.call(operation)
        if spec is None:
            return _failure(operation, "not_configured", f"crm {doc.name!r} has no {operation}")
        try:
            url = str(render(spec.url, context) or "")
            body = render(spec.body, context) if spec.body is not None else None
            headers = resolve_secrets({**doc.headers, **spec.headers}, self.secrets)
        except MissingSecret as exc:
            return _failure(operation, "missing_secret", str(exc.args[0]))
        except (TemplateError, TypeError, ValueError) as exc:
            return _failure(operation, "bad_template", f"{type(exc).__name__}: {exc}")
        if url.startswith("/"):
            if base_url is None:
                return _failure(operation, "bad_url", f"{url!r} is a path and no base is known")
            url = urljoin(base_url, url)
        if not url.startswith(("http://", "https://")):
            return _failure(operation, "bad_url", f"{url!r} is not an http(s) address")
        try:
            async with httpx.AsyncClient(
                transport=self._transport, follow_redirects=False
            ) as client:
                r = await client.request(
                    spec.method,
                    url,
                    json=body,
                    headers={"accept": "application/json", **headers},
                    timeout=doc.timeout_ms / 1000,
                )
        except httpx.TimeoutException:
            return _failure(operation, "timeout", f"no answer within {doc.timeout_ms} ms")
        except httpx.HTTPError as exc:
            return _failure(operation, "unreachable", f"{type(exc).__name__}: {exc}")
        return _answer(doc, operation, r)


def _answer(doc: CrmDoc, operation: str, r: httpx.Response) -> CrmResult:
    """The result of an HTTP answer: a lead (or none found), or the failure."""
    if operation == "lookup" and r.status_code == 404:
        return CrmResult(operation, True, 404)
    if not 200 <= r.status_code < 300:
        text = " ".join(r.text.split())[:200]
        return _failure(
            operation, f"http_{r.status_code}", f"HTTP {r.status_code}: {text}", r.status_code
        )
    try:
        answer = r.json() if r.content else None
    except ValueError:
        if operation == "lookup":
            return _failure(operation, "bad_answer", "the CRM's answer is not JSON", r.status_code)
        answer = None
    lead, lead_id = lead_of(answer, doc.lead_id)
    return CrmResult(operation, True, r.status_code, lead, lead_id)
