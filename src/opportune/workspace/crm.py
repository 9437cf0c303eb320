"""The CRM integration document (``kind: crm``): how the agent's CRM panel looks up, creates
and updates the lead of the customer in a chat, as REST calls with templated bodies.

Each call names its method and URL (absolute, or a path on this server, as the demo's
stand-in CRM is), its headers (values may name a secret: ``Bearer ${secret:CRM_TOKEN}``,
resolved from the webhook secrets at call time, never stored) and a JSON body whose strings
may hold ``{{ ... }}`` placeholders, rendered in the same sandbox as webhook bodies, from
``visitor``, ``customer``, ``conversation``, ``agent``, ``lead`` and ``fields`` (what the
agent typed in the panel). URL placeholders should be escaped: ``{{ customer.email |
urlencode }}``.

>>> doc = CrmDoc.model_validate({"name": "crm", "lookup": {"url": "/demo/crm/leads"}})
>>> doc.lookup.method, doc.timeout_ms, doc.operations
('GET', 3000, ['lookup'])
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from opportune.core.conditions import ConditionError, parse_duration
from opportune.workspace.documents import _NAME, Document
from opportune.workspace.engagement import Duration

OPERATIONS = ("lookup", "create", "update")


class CrmCall(Document):
    """One REST call of the integration."""

    method: Literal["GET", "POST", "PUT", "PATCH"] = "GET"
    # Absolute (http/https), or a path on this server ("/demo/crm/leads").
    url: str = Field(pattern=r"^(https?://|/)", max_length=2048)
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)
    body: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _body_fits_method(self) -> CrmCall:
        if self.method == "GET" and self.body is not None:
            raise ValueError("a GET call has no body; put what it needs in the url")
        return self


class CrmDoc(Document):
    """A CRM the agent's panel talks to: at least one of ``lookup``, ``create``, ``update``."""

    kind: Literal["crm"] = "crm"
    name: str = Field(pattern=_NAME)
    description: str = Field(default="", max_length=500)
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)  # on every call
    timeout: Duration = "3s"
    # The field of the CRM's answer that holds the lead's id (``lead.id`` in templates).
    lead_id: str = Field(default="id", min_length=1, max_length=64)
    lookup: CrmCall | None = None
    create: CrmCall | None = None
    update: CrmCall | None = None

    @model_validator(mode="after")
    def _calls(self) -> CrmDoc:
        if not self.operations:
            raise ValueError("a crm needs at least one of lookup, create, update")
        if self.timeout_ms > 30_000:
            raise ValueError("timeout: at most 30s (the agent is waiting)")
        return self

    @property
    def operations(self) -> list[str]:
        return [op for op in OPERATIONS if getattr(self, op) is not None]

    @property
    def timeout_ms(self) -> int:
        try:
            return parse_duration(self.timeout, ["timeout"])
        except ConditionError as exc:  # validated already by Duration
            raise ValueError(exc.message) from None

    def call(self, operation: str) -> CrmCall | None:
        return getattr(self, operation, None) if operation in OPERATIONS else None


CRM_KINDS: dict[str, type[Document]] = {"crm": CrmDoc}
