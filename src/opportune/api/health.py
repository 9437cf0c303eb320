"""Readiness and metrics: ``GET /readyz`` and ``GET /metrics`` (``/healthz``, "the process
answers", stays in ``api/app.py``).

``/readyz`` says whether this process can do its work now: the database answers, Redis
answers (when configured) and the database's schema is at the migrations' head. 200 when
all hold; 503 with the checks that failed named, so a proxy or an orchestrator takes the
process out of rotation. The detail of a failure goes to the log, not to the answer (the
endpoint is public).

``/metrics`` is Prometheus' text format: the counters of ``engine/metrics.py`` (summed
over the worker processes in multiprocess mode) and, read at scrape time, the visitors on
Live Now, the interactions waiting per queue and the webhook calls pending.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.responses import JSONResponse, Response

from opportune.engine import metrics
from opportune.store.db import schema_revisions
from opportune.store.gauges import queue_sizes

if TYPE_CHECKING:
    from opportune.api.app import Runtime

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 2.0  # a check that takes longer counts as failed: the process is not ready


def health_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    readiness = Readiness(runtime)

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await readiness.check()
        failed = [name for name, c in checks.items() if not c["ok"]]
        body = {"status": "not_ready" if failed else "ready", "notReady": failed, "checks": checks}
        return JSONResponse(body, status_code=503 if failed else 200)

    @router.get("/metrics")
    async def metrics_page() -> Response:
        return Response(await scrape(runtime), media_type=CONTENT_TYPE_LATEST)

    return router


class Readiness:
    """The checks of ``/readyz``; a change of any check's state is logged once."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.last: dict[str, bool] = {}

    async def check(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        db = await self._timed("database", self._database)
        if db["ok"]:
            current, head = db.pop("revisions")
            out["database"] = {"ok": True}
            out["migrations"] = {"ok": current == head, "current": current, "head": head}
            if current != head:
                out["migrations"]["error"] = "the schema is not at the head: run opportune migrate"
        else:
            out["database"] = db
            out["migrations"] = {"ok": False, "error": "unknown: the database did not answer"}
        if self.runtime.settings.redis_url:
            out["redis"] = await self._timed("redis", self._redis)
        for name, c in out.items():
            if self.last.get(name, True) != c["ok"]:
                level = logging.INFO if c["ok"] else logging.WARNING
                log.log(level, "readiness: %s is %s", name, "ok" if c["ok"] else "failing")
            self.last[name] = c["ok"]
        return out

    async def _timed(self, name: str, probe: Callable[[], Any]) -> dict[str, Any]:
        try:
            return {"ok": True, **await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)}
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {CHECK_TIMEOUT_S:g} s"}
        except Exception as exc:
            if self.last.get(name, True):  # said once per outage, not at every probe
                log.warning("readiness: %s unreachable: %s", name, exc)
            return {"ok": False, "error": "unreachable"}

    async def _database(self) -> dict[str, Any]:
        engine = self.runtime.ingestor.engine
        current, head = await asyncio.to_thread(schema_revisions, engine)
        return {"revisions": (list(current), list(head))}

    async def _redis(self) -> dict[str, Any]:
        import redis.asyncio as aioredis

        client = aioredis.from_url(
            self.runtime.settings.redis_url,
            socket_timeout=CHECK_TIMEOUT_S,
            socket_connect_timeout=CHECK_TIMEOUT_S,
        )
        try:
            await client.ping()
        finally:
            await client.aclose()
        return {}


async def scrape(runtime: Runtime) -> bytes:
    """The metrics page: the counters, then the gauges read now from the database and Redis
    (a gauge whose store is away is left out; its failure is counted)."""
    registry = CollectorRegistry(auto_describe=False)
    directory = runtime.settings.metrics_dir
    if directory is not None:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=str(directory))
    else:
        registry.register(_Process())
    registry.register(_Now(await _now_figures(runtime)))
    return generate_latest(registry)


async def _now_figures(runtime: Runtime) -> list[Metric]:
    now_ms = int(time.time() * 1000)
    found: list[Metric] = []
    board = runtime.live_now if runtime.live_now is not None else runtime.ingestor.live_now
    try:
        visitors = await asyncio.wait_for(board.visitors(now_ms), CHECK_TIMEOUT_S)
        found.append(
            GaugeMetricFamily(
                "opportune_live_visitors",
                "Visitors seen within the Live Now window (every process's, with Redis)",
                value=visitors,
            )
        )
    except Exception as exc:
        metrics.storage_error(exc, "metrics")
    try:
        engine = runtime.ingestor.engine
        waiting, pending = await asyncio.wait_for(
            asyncio.to_thread(queue_sizes, engine), CHECK_TIMEOUT_S
        )
    except Exception as exc:
        metrics.storage_error(exc, "metrics")
        return found
    queues = GaugeMetricFamily(
        "opportune_queue_waiting", "Interactions waiting for an agent, per queue", labels=["queue"]
    )
    for name in sorted(set(runtime.workspace.queues) | set(waiting)):
        queues.add_metric([name], waiting.get(name, 0))
    found.append(queues)
    found.append(
        GaugeMetricFamily(
            "opportune_webhooks_pending",
            "Webhook calls in the outbox not yet sent (nor given up)",
            value=pending,
        )
    )
    return found


class _Now:
    """Figures read for one scrape, as a collector."""

    def __init__(self, found: list[Metric]) -> None:
        self.found = found

    def collect(self) -> Iterator[Metric]:
        yield from self.found


class _Process:
    """This process's metrics (one process: the default registry holds them)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
