"""The console's audit page: every change to the workspace (console, admin API, imports),
newest first, 50 to a page, each with who, when, and what changed: the fields whose value
differs between the document before and after, by path."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from jinja2 import Environment
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from opportune.api.console import Reader, render, runtime
from opportune.store import audit

PAGE: Final = 50
_MISSING: Final = object()


def _flat(value: Any, path: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flat(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            _flat(v, f"{path}[{i}]", out)
    else:
        out[path] = value
    return out


def _shown(value: Any) -> str | None:
    """A leaf as the page shows it: text as it is, anything else as JSON."""
    if value is _MISSING or value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """The leaves that differ, by path (``None`` on the side where a leaf is absent or
    null; values other than text as JSON).

    >>> for row in diff({"a": 1, "c": {"d": [1, 2]}, "n": None}, {"a": 2, "c": {"d": [1]},
    ...                 "e": "x", "f": True}):
    ...     print(row)
    {'path': 'a', 'before': '1', 'after': '2'}
    {'path': 'c.d[1]', 'before': '2', 'after': None}
    {'path': 'e', 'before': None, 'after': 'x'}
    {'path': 'f', 'before': None, 'after': 'true'}
    """
    old = _flat(before, "", {}) if before is not None else {}
    new = _flat(after, "", {}) if after is not None else {}
    rows = []
    for path in sorted(old.keys() | new.keys()):
        a, b = _shown(old.get(path, _MISSING)), _shown(new.get(path, _MISSING))
        if a != b:
            rows.append({"path": path or "(document)", "before": a, "after": b})
    return rows


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def console_audit_router(e: Environment) -> APIRouter:
    api = APIRouter(prefix="/console/audit", include_in_schema=False)

    @api.get("")
    async def page(
        request: Request,
        person: Reader,
        before: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        def read() -> list[audit.Change]:
            with runtime(request).ingestor.engine.connect() as conn:
                return audit.changes(conn, limit=PAGE + 1, before_id=before)

        found = await run_in_threadpool(read)
        rows = [
            {"change": c, "when": _when(c.at), "diff": diff(c.before, c.after)}
            for c in found[:PAGE]
        ]
        older = found[PAGE - 1].id if len(found) > PAGE else None
        return render(
            e,
            request,
            person,
            "audit.html",
            section="audit",
            rows=rows,
            older=older,
            first=before is None,
        )

    return api
