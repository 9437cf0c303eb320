"""The OpenAPI document describes what the server does: a bounded schemathesis pass over every
documented operation, in process against the ASGI app (API key ``k``), asserting no 5xx,
every status code documented, every answer's content type and body as documented, and
schema-valid requests accepted; and each path's 405 ``Allow`` naming exactly its methods.

What the schema cannot say (checked by the server, answered 422 with the path of the
problem): the condition language inside a definition, the rules between a map's action
type and its blocks or a KPI's tracking and its codes, ``customers/lookup``'s "exactly one
of email, phone, customerId", attributions naming outcomes no KPI tracks (the
server's state), and a history import without a single non-blank line. For those operations, and only with those codes, a schema-valid request
may be refused; every other check applies to them too.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.settings import Settings

MAX_EXAMPLES = 25  # per operation and mode: ≈ 2,400 requests, 40–60 s on 2 busy cores
KEY = {"X-API-Key": "k"}
# Refusals of schema-valid requests the schema cannot express (the module's docstring).
SEMANTIC = {
    "invalid_definition": re.compile(r"^(POST|PUT) /v1/(segments|outcomes|action-maps|kpis)"),
    "invalid_request": re.compile(r"^GET /v1/customers/lookup$"),
    "too_many_failures": re.compile(r"^POST /v1/outcome-attributions$"),
    "empty": re.compile(r"^POST /v1/import/events$"),
}


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """The history import's body: JSON lines, sent as the bytes (or text) generated for
    its ``string``/``binary`` schema."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    settings = Settings(
        workspace=ws,
        data_dir=tmp_path,
        api_key="k",
        retrain_interval_h=0,
        rate_limit_admin_per_key=0,  # the pass makes thousands of requests with one key
    )
    app = create_app(settings)
    yield app
    asgi.shutdown_lifespans()  # schemathesis keeps the app's lifespan open between calls


def _semantic(case: Any, response: Any) -> bool:
    if response.status_code not in (400, 422):  # 400: a readable body with nothing in it
        return False
    code = (response.json().get("error") or {}).get("code")
    where = f"{case.method.upper()} {case.operation.path}"
    return code in SEMANTIC and bool(SEMANTIC[code].match(where))


def test_every_operation_answers_as_documented(app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    cases: Counter[str] = Counter()
    failures: dict[str, str] = {}
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        # Only strings in the path and nothing else: nothing invalid to send.
        negative = bool(len(operation.query) or len(operation.body))
        modes = (
            (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            if negative
            else (GenerationMode.POSITIVE,)
        )
        for mode in modes:
            try:
                _exercise(operation, mode, cases)
            except Unsatisfiable:  # nothing invalid to send (e.g. only string path parameters)
                continue
            except Exception as exc:  # collected: one report naming every failing operation
                failures[f"{name} ({mode.value})"] = f"{type(exc).__name__}: {exc}"[:600]
    elapsed = time.monotonic() - started
    print(f"\nschemathesis: {dict(cases)} cases in {elapsed:.1f} s, {len(failures)} failing")
    assert sum(cases.values()) > 67 * MAX_EXAMPLES  # every operation was exercised
    print("\n".join(sorted(failures)))
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in sorted(failures.items()))


def _exercise(operation: Any, mode: GenerationMode, cases: Counter[str]) -> None:
    """Up to ``MAX_EXAMPLES`` requests of ``mode``; raises at the first failed check."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        cases[mode.value] += 1
        response = case.call(headers=KEY)
        checks = list(CHECKS)
        if mode is GenerationMode.POSITIVE and not _semantic(case, response):
            checks.append(positive_data_acceptance)
        case.validate_response(response, checks=checks)

    run()


def test_405_allow_lists_exactly_the_methods_of_the_path(app: Any) -> None:
    with TestClient(app) as c:
        paths = c.get("/openapi.json").json()["paths"]
        wrong = []
        for path, item in paths.items():
            documented = sorted(m.upper() for m in item)
            concrete = re.sub(r"\{[^}]+\}", "x1", path)
            for method in ("PATCH", "OPTIONS"):
                if method in documented:
                    continue
                r = c.request(method, concrete, headers=KEY)
                allow = sorted(m.strip() for m in r.headers.get("allow", "").split(","))
                if r.status_code != 405 or allow != documented:
                    wrong.append(f"{method} {path}: {r.status_code} Allow {allow}, {documented}")
                elif r.json()["error"]["code"] != "method_not_allowed":
                    wrong.append(f"{method} {path}: {r.text}")
        assert not wrong, "\n".join(wrong)
