"""``POST /v1/events`` over HTTP: bad input gets a precise 4xx, good input is kept once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select

from opportune.api.app import create_app
from opportune.settings import Settings
from opportune.store.schema import events

ORIGIN = "https://shop.example"
SITE_YAML = f"""
kind: site
name: shop
key: shop-site-key
origins: [{ORIGIN}]
"""


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "sites.yaml").write_text(SITE_YAML)
    settings = Settings(
        database_url=db_url,
        workspace=ws,
        data_dir=tmp_path,
        api_key="k",
        max_body_bytes=8192,
        max_batch_events=20,
    )
    with TestClient(create_app(settings)) as c:
        c.db_url = db_url  # type: ignore[attr-defined]
        yield c


def now_ms() -> int:
    return int(time.time() * 1000)


def batch(n: int = 3, visitor: str = "v1", prefix: str = "e", **kw: Any) -> dict[str, Any]:
    t = now_ms()
    return {
        "siteKey": "shop-site-key",
        "visitorId": visitor,
        "sentAt": t,
        "events": [
            {"id": f"{prefix}{i}", "type": "page_view", "ts": t - 100 + i, "url": f"{ORIGIN}/p{i}"}
            for i in range(n)
        ],
        **kw,
    }


def post(c: TestClient, body: Any, origin: str | None = ORIGIN, raw: bytes | None = None):
    headers = {"content-type": "text/plain;charset=UTF-8"}
    if origin:
        headers["origin"] = origin
    return c.post(
        "/v1/events", content=raw if raw is not None else json.dumps(body), headers=headers
    )


def stored(c: TestClient) -> int:
    eng = create_engine(c.db_url.replace("postgresql://", "postgresql+psycopg://"))  # type: ignore[attr-defined]
    try:
        with eng.connect() as conn:
            return conn.execute(select(func.count()).select_from(events)).scalar_one()
    finally:
        eng.dispose()


def test_accepted_batch_has_cors_for_allowed_origin(client: TestClient) -> None:
    r = post(client, batch())
    assert r.status_code == 200
    assert r.json()["accepted"] == 3
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert stored(client) == 3


@pytest.mark.parametrize(
    ("mutate", "status", "code", "path"),
    [
        (lambda b: b["events"][1].update(ts="yesterday"), 400, "invalid_batch", "$.events[1].ts"),
        (lambda b: b["events"][0].update(colour="red"), 400, "invalid_batch", "$.events[0]"),
        (
            lambda b: b["events"][2].update(type="teleport"),
            400,
            "invalid_batch",
            "$.events[2].type",
        ),
        (lambda b: b.pop("siteKey"), 400, "invalid_batch", "$"),
        (lambda b: b.update(visitorId="has spaces"), 400, "invalid_batch", "$.visitorId"),
        (lambda b: b["events"][0].update(url="x" * 3000), 400, "invalid_batch", "$.events[0].url"),
        (
            lambda b: b["events"][0].update(attributes={f"k{i}": i for i in range(51)}),
            400,
            "invalid_batch",
            "$.events[0].attributes",
        ),
        (lambda b: b.update(events=[]), 400, "invalid_batch", "$.events"),
        (lambda b: b.update(siteKey="nobody-key"), 403, "unknown_site_key", "$.siteKey"),
    ],
)
def test_bad_batches_are_refused_whole_with_the_field_named(
    client: TestClient, mutate: Any, status: int, code: str, path: str
) -> None:
    body = batch()
    mutate(body)
    r = post(client, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err.get("path", "$") == path
    assert err["message"]
    assert stored(client) == 0


def test_malformed_oversized_and_too_long(client: TestClient) -> None:
    r = post(client, None, raw=b'{"siteKey": ')
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_json")
    r = post(client, None, raw=b"x" * 9000)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large")
    r = post(client, batch(21))
    assert (r.status_code, r.json()["error"]["path"]) == (413, "$.events")
    assert stored(client) == 0


def test_wrong_origin_is_refused_without_cors_grant(client: TestClient) -> None:
    r = post(client, batch(), origin="https://evil.example")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in r.headers
    pre = client.options("/v1/events", headers={"origin": "https://evil.example"})
    assert pre.status_code == 403
    ok = client.options(
        "/v1/events", headers={"origin": ORIGIN, "access-control-request-method": "POST"}
    )
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert stored(client) == 0


def test_duplicates_and_partly_bad_batches_keep_every_good_event_once(client: TestClient) -> None:
    b = batch(5)
    assert post(client, b).json()["accepted"] == 5
    again = post(client, b).json()
    assert (again["accepted"], again["duplicates"]) == (0, 5)
    mixed = batch(3, prefix="m")
    mixed["events"][1]["ts"] = now_ms() - 3 * 3600 * 1000  # too old
    mixed["events"].append(dict(mixed["events"][0]))  # the same id twice in one batch
    r = post(client, mixed).json()
    assert (r["accepted"], r["duplicates"]) == (2, 1)
    assert [(x["index"], x["id"]) for x in r["refused"]] == [(1, "m1")]
    assert "too old" in r["refused"][0]["reason"]
    assert stored(client) == 7


def test_other_methods_are_405(client: TestClient) -> None:
    r = client.get("/v1/events")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {
                "siteKey": st.just("shop-site-key"),
                "visitorId": st.text(max_size=70),
                "sentAt": st.integers(),
                "events": st.lists(json_values, max_size=3),
            }
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_garbage_never_causes_a_5xx(client: TestClient, body: bytes) -> None:
    r = post(client, None, raw=body)
    assert 200 <= r.status_code < 500, r.text
    assert "error" in r.json() or "accepted" in r.json()


def test_pages_served_by_this_server_may_always_send(client: TestClient) -> None:
    # The demo site's pages come from the server itself, on whatever host and port it runs.
    r = post(client, batch(), origin="http://testserver")
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://testserver"


def test_the_snippet_is_served_compressed(client: TestClient) -> None:
    r = client.get("/sdk/opportune.js", headers={"accept-encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert "opportune" in r.text


def test_text_the_database_cannot_store_is_refused_not_a_5xx(client: TestClient) -> None:
    """NUL in an event's text: that event refused with its reason, the rest stored, and a
    resend answered the same (PostgreSQL cannot store NUL: this was a 503 for ever). NUL
    in the batch's context: 400 naming the field. A lone surrogate is not valid JSON."""
    body = batch(4)
    body["events"][1]["url"] = ORIGIN + "/a\u0000b"
    body["events"][2]["attributes"] = {"plan": "gold\u0000"}
    for _ in range(2):
        r = post(client, body)
        assert r.status_code == 200, r.text
        refused = r.json()["refused"]
        assert [(x["index"], x["id"]) for x in refused] == [(1, "e1"), (2, "e2")]
        assert "NUL" in refused[0]["reason"] and "url" in refused[0]["reason"]
        assert "attributes.plan" in refused[1]["reason"]
    assert stored(client) == 2
    ctx = batch(1, visitor="v2", context={"locale": "es\u0000"})
    r = post(client, ctx)
    assert (r.status_code, r.json()["error"]["path"]) == (400, "$.context.locale")
    lone = post(
        client,
        None,
        raw=json.dumps(batch(1, visitor="v3", prefix="s")).replace("/p0", "/\\ud800").encode(),
    )
    assert lone.status_code == 400 and lone.json()["error"]["code"] == "invalid_json"
    assert stored(client) == 2
