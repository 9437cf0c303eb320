"""The OpenAPI document as the server behaves: the errors every API route answers (one
shape, ``api/errors.ErrorBody``), the bodies checked by hand described by their models, and
the ``Allow`` header of a 405 read from the document.

FastAPI writes the document from the routes' signatures; three things it cannot see:
errors raised by dependencies and handlers (401/403/404/409/429…), the error shape our
handlers answer (not FastAPI's ``{"detail": …}``), and bodies read as ``Any`` then
validated against a workspace model (definitions, KPIs). ``document`` adds them once, on the
first request for ``/openapi.json``.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from opportune.api.errors import ErrorBody, response
from opportune.engine.rules import MODELS

# The definitions and KPIs read their bodies by hand: kind by collection.
_KINDS = {"segments": "segment", "outcomes": "outcome", "action-maps": "actionMap", "kpis": "kpi"}
_BODY = re.compile(r"^/v1/(segments|outcomes|action-maps|kpis)(/\{name\}|/validate|/estimate)?$")


def document(app: FastAPI) -> None:
    """Declare in ``app``'s OpenAPI document the errors its API routes answer, in the one
    shape (``ErrorBody``): 401/403 (key, scope or role) and 422 (a parameter or body that
    does not validate; FastAPI's own 422 shape is not what is sent) on every route; 400
    where a body is read (not JSON); 404 where the path, body or query names something;
    on the API-key routes 429 (their rate limit) and, on changes, 409 (refused by the
    current state). A route's own ``responses=`` may add more. Call once, at start."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = generate()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body.pop("$defs", {}))
        schemas["ErrorBody"] = body
        for path, item in doc.get("paths", {}).items():
            if not path.startswith(("/v1/", "/agent/api/")):
                continue
            for method, operation in item.items():
                _describe_body(schemas, path, method, operation)
                statuses = [401, 403, 422]
                if "requestBody" in operation:
                    statuses.append(400)  # a body that is not JSON
                if "{" in path or "requestBody" in operation or operation.get("parameters"):
                    statuses.append(404)  # the path, the body or the query names something
                if path.startswith("/v1/"):
                    statuses.append(429)
                    if method in ("post", "put", "delete"):
                        statuses.append(409)  # a change the current state refuses
                answers = operation.setdefault("responses", {})
                for status in statuses:
                    if status == 422 or str(status) not in answers:
                        answers[str(status)] = response(status)
                for status, spec in answers.items():
                    if status[0] in "45" and "content" not in spec:
                        spec.update(response(int(status)))
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _describe_body(
    schemas: dict[str, Any], path: str, method: str, operation: dict[str, Any]
) -> None:
    """A definition's or KPI's body: the JSON Schema of its workspace model (``kind``
    and, on PUT, ``name`` default from the route, so they are not required)."""
    m = _BODY.match(path)
    if m is None or "requestBody" not in operation:
        return
    model = MODELS[_KINDS[m.group(1)]]
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    if method == "put" or m.group(2) in ("/validate", "/estimate"):
        schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    operation["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": schema}},
    }


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for ``path``, for a 405's ``Allow``."""
    for template, methods in _templates(app):
        if template.fullmatch(path):
            return methods
    return []


def _templates(app: FastAPI) -> list[tuple[re.Pattern[str], list[str]]]:
    """Each documented path as a pattern (``{name}``: one segment) and its methods."""
    found: list[tuple[re.Pattern[str], list[str]]] | None = getattr(app.state, "_allow", None)
    if found is None:
        found = []
        for path, item in app.openapi().get("paths", {}).items():
            pattern = re.compile(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path)))
            found.append((pattern, sorted(m.upper() for m in item)))
        # A literal segment wins over a parameter (/customers/merge before /customers/{id}).
        found.sort(key=lambda t: t[0].pattern.count("[^/]+"))
        app.state._allow = found
    return found
