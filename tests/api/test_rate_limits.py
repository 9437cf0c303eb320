"""Rate limits: per client IP and per site on ``/v1/events``, per API key on the admin API;
429 naming the limit, with Retry-After; in memory and shared through Redis."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from opportune.api.app import create_app
from opportune.engine.rate_limits import Limit, MemoryLimiter, Refusal
from opportune.settings import Settings
from opportune.store.schema import events

REDIS_URL = "redis://127.0.0.1:6379/13"
ORIGIN = "https://shop.example"
SITE_YAML = f"""
kind: site
name: shop
key: shop-site-key
origins: [{ORIGIN}]
"""

Make = Callable[..., TestClient]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """Apps on one SQLite file and, for ``redis``, one Redis prefix: their limits shared."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "sites.yaml").write_text(SITE_YAML)
    shared: dict[str, Any] = {"workspace": ws, "data_dir": tmp_path, "api_key": "k"}
    if request.param == "redis":
        shared |= {"redis_url": REDIS_URL, "redis_prefix": f"rl-{uuid.uuid4().hex[:8]}:"}
    with ExitStack() as stack:

        def go(**limits: Any) -> TestClient:
            settings = Settings(**shared, trusted_proxy_headers=True, **limits)
            return stack.enter_context(TestClient(create_app(settings)))

        yield go


def post(c: TestClient, ip: str, visitor: str = "v1") -> Any:
    t = int(time.time() * 1000)
    body = {
        "siteKey": "shop-site-key",
        "visitorId": visitor,
        "sentAt": t,
        "events": [{"id": uuid.uuid4().hex, "type": "page_view", "ts": t, "url": ORIGIN}],
    }
    headers = {"origin": ORIGIN, "x-forwarded-for": ip}
    return c.post("/v1/events", content=json.dumps(body), headers=headers)


def stored(c: TestClient) -> int:
    engine = c.app.app.state.runtime.ingestor.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def test_one_ip_over_its_limit_gets_429_with_retry_after(make: Make) -> None:
    c = make(rate_limit_events_per_ip=0.1, rate_limit_burst_s=30)  # a burst of 3
    assert [post(c, "10.0.0.1").status_code for _ in range(3)] == [200, 200, 200]
    r = post(c, "10.0.0.1")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "10"  # one token at 0.1 a second
    assert r.headers["access-control-allow-origin"] == ORIGIN  # the page can read it
    err = r.json()["error"]
    assert err["code"] == "rate_limited" and err["limit"] == "per_ip"
    assert "per_ip rate limit" in err["message"]
    assert stored(c) == 3  # the refused batch was not ingested
    assert post(c, "10.0.0.2").status_code == 200  # another IP has its own bucket


def test_a_site_over_its_limit_refuses_every_ip(make: Make) -> None:
    c = make(rate_limit_events_per_ip=0, rate_limit_events_per_site=0.1, rate_limit_burst_s=20)
    assert [post(c, f"10.0.1.{i}").status_code for i in range(2)] == [200, 200]
    r = post(c, "10.0.1.9")
    assert r.status_code == 429 and r.headers["retry-after"] == "10"
    assert r.json()["error"]["limit"] == "per_site"


def test_a_refused_request_takes_no_token_from_its_other_bucket(make: Make) -> None:
    c = make(rate_limit_events_per_ip=0.2, rate_limit_events_per_site=0.1, rate_limit_burst_s=20)
    # per IP a burst of 4, per site of 2: the site refuses the third, whatever the IP.
    assert [post(c, "10.0.2.1").status_code for _ in range(3)] == [200, 200, 429]
    assert post(c, "10.0.2.1").json()["error"]["limit"] == "per_site"


@pytest.mark.redis
def test_processes_sharing_redis_share_the_buckets(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "sites.yaml").write_text(SITE_YAML)
    prefix = f"rl-{uuid.uuid4().hex[:8]}:"
    one = Settings(
        workspace=ws,
        data_dir=tmp_path,
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        trusted_proxy_headers=True,
        rate_limit_events_per_ip=0.1,
        rate_limit_burst_s=20,
    )
    two = one.model_copy(update={"data_dir": tmp_path / "two"})
    with TestClient(create_app(one)) as a, TestClient(create_app(two)) as b:
        assert post(a, "10.0.3.1").status_code == 200
        assert post(b, "10.0.3.1").status_code == 200
        r = post(a, "10.0.3.1")
        assert r.status_code == 429 and r.json()["error"]["limit"] == "per_ip"


def test_admin_api_is_limited_per_key(make: Make) -> None:
    from opportune.store import api_keys

    c = make(rate_limit_admin_per_key=0.1, rate_limit_burst_s=20)  # a burst of 2
    engine = c.app.app.state.runtime.ingestor.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        _, other = api_keys.create(conn, name="reader", scope="read", now_ms=0)
    k = {"X-API-Key": "k"}
    assert [c.get("/v1/segments", headers=k).status_code for _ in range(2)] == [200, 200]
    r = c.get("/v1/segments", headers=k)
    assert r.status_code == 429 and r.headers["retry-after"] == "10"
    assert r.json()["error"] == {
        "code": "rate_limited",
        "message": "over the per_key rate limit; retry after 10 s",
        "limit": "per_key",
    }
    assert c.get("/v1/segments", headers={"X-API-Key": other}).status_code == 200


def test_limits_set_to_zero_are_off(make: Make) -> None:
    c = make(rate_limit_events_per_ip=0, rate_limit_events_per_site=0, rate_limit_admin_per_key=0)
    assert c.app.limiter is None  # type: ignore[attr-defined]
    assert all(post(c, "10.0.4.1").status_code == 200 for _ in range(30))


def test_memory_buckets_refill_and_forget_idle_keys() -> None:
    limiter = MemoryLimiter(max_keys=4)
    limit = Limit("per_ip", per_s=2.0, burst=2.0)
    assert limiter.take([("a", limit)], now=0.0) is None
    assert limiter.take([("a", limit)], now=0.0) is None
    assert limiter.take([("a", limit)], now=0.0) == Refusal("per_ip", 0.5)
    assert limiter.take([("a", limit)], now=0.5) is None
    for key in "bcde":  # the fifth key makes room: every bucket idle long enough is dropped
        limiter.take([(key, limit)], now=10.0)
    assert len(limiter._buckets) <= 4
    assert limiter.take([("a", limit)], now=10.0) is None  # forgotten: starts full


def test_the_limit_settings_are_named_and_checked() -> None:
    with pytest.raises(ValueError, match="rate_limit_events_per_ip"):
        Settings(rate_limit_events_per_ip=-1)
    with pytest.raises(ValueError, match="RATE_LIMIT_STORE=redis needs OPPORTUNE_REDIS_URL"):
        Settings(rate_limit_store="redis")


@pytest.mark.redis
def test_memory_buckets_can_be_kept_beside_redis(tmp_path: Path) -> None:
    from opportune.engine.rate_limits import MemoryLimiter as Memory

    settings = Settings(
        data_dir=tmp_path, redis_url=REDIS_URL, redis_prefix="rl-x:", rate_limit_store="memory"
    )
    with TestClient(create_app(settings)) as c:
        assert isinstance(c.app.limiter, Memory)  # type: ignore[attr-defined]


def test_without_redis_requests_are_let_through(caplog: pytest.LogCaptureFixture) -> None:
    """A limit protects the service; Redis away must not refuse every request."""
    import asyncio
    import socket

    from opportune.engine.rate_limits import RedisLimiter

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go() -> list[Refusal | None]:
        limiter = RedisLimiter(f"redis://127.0.0.1:{port}/0", prefix="x:")
        tight = Limit("per_ip", per_s=0.001, burst=1.0)
        try:
            return [await limiter.check([("ip:a", tight)]) for _ in range(3)]
        finally:
            await limiter.aclose()

    assert asyncio.run(go()) == [None, None, None]
    assert "rate limits not checked: Redis unavailable" in caplog.text
