"""The ASGI application: tracking hot path, snippet, demo site and admin API in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from starlette.responses import RedirectResponse

from opportune import __version__
from opportune.api import errors, openapi
from opportune.api.apidocs import install_api_docs
from opportune.api.assets import assets_router
from opportune.api.auth import api_key_dependency
from opportune.api.demo import demo_site
from opportune.api.health import health_router
from opportune.api.tracking import SitesNow, TrackingEndpoint
from opportune.api.widget_config import widget_config_router
from opportune.engine import metrics
from opportune.engine.enrichment import GeoResolver
from opportune.engine.ingest import Ingestor
from opportune.engine.live import LiveStore, Loader, RedisLiveStore
from opportune.engine.live_now import RedisLiveNow
from opportune.engine.rate_limits import Limit, Limiter, MemoryLimiter, RedisLimiter
from opportune.engine.rollups import Rollups
from opportune.engine.rules import RuleBook
from opportune.engine.scoring import OutcomeScorer
from opportune.engine.webhooks import WebhookWorker
from opportune.settings import Settings
from opportune.store.db import Checkpointer, make_engine, migrate
from opportune.store.writer import GroupCommitWriter
from opportune.workspace import Workspace, load_workspace

if TYPE_CHECKING:
    from opportune.engine.chat import ChatService
    from opportune.engine.router import Router

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parent.parent
DEMO_DIR = PACKAGE / "web" / "demo"
EXAMPLE_WORKSPACE = PACKAGE / "examples" / "workspace"


@dataclass
class Runtime:
    """What the running app holds; built at start-up, closed at shutdown."""

    settings: Settings
    workspace: Workspace
    ingestor: Ingestor
    writer: GroupCommitWriter
    rules: RuleBook
    checkpointer: Checkpointer | None = None
    webhooks: WebhookWorker | None = None
    router: Router | None = None  # built with the admin API
    chat: ChatService | None = None  # built with the routing engine
    live_now: RedisLiveNow | None = None  # Live Now shared through Redis (else in memory)
    rollups: Rollups | None = None  # the reports' rollups kept up to date
    limiter: Limiter | None = None  # rate limits of /v1/events and the admin API

    async def route_ticks(self, stop: asyncio.Event, every_s: float = 1.0) -> None:
        """Until ``stop``: route again whatever waits, so a held interaction falls back when
        its hold times out and a bullseye ring widens on time, even when nothing else
        happens (arrivals, ends and presence changes route at once anyway)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            if stop.is_set() or self.router is None:
                return
            try:
                if await asyncio.to_thread(self.router.waiting_count):
                    # Assignments are announced by the chat service, which listens.
                    await asyncio.to_thread(self.router.dispatch, int(time.time() * 1000))
            except Exception as exc:  # the database is away: try again on the next tick
                log.exception("could not route the waiting interactions")
                metrics.storage_error(exc, "routing")

    async def watch_rules(self, stop: asyncio.Event) -> None:
        """Until ``stop``: poll for definitions changed by any process (the admin API writes
        them) and for queue presence. A pass in progress finishes (it runs in a thread)."""
        sqlite = self.ingestor.engine.dialect.name == "sqlite"
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.rules_poll_s)
            if stop.is_set():
                return
            try:
                if sqlite:  # one indexed max(): cheaper on the loop than a thread hop
                    self.rules.refresh()
                else:
                    await asyncio.to_thread(self.rules.refresh)
                if self.workspace.queues:
                    await asyncio.to_thread(
                        self.ingestor.engager.board.refresh, self.ingestor.engine
                    )
                # A model trained and activated by `opportune train` is picked up here.
                await asyncio.to_thread(self.ingestor.scorer.refresh)
                if self.router is not None and self.router.score is not None:
                    await asyncio.to_thread(self.router.score.refresh)
            except Exception as exc:  # the database is away: keep the rules, try again
                log.exception("could not refresh the rules")
                metrics.storage_error(exc, "rules")

    async def sample_metrics(self, stop: asyncio.Event, every_s: float = 1.0) -> None:
        """Until ``stop``: set this process's gauges (engine/metrics.py) every ``every_s``."""
        metrics.forget_dead_processes(
            str(self.settings.metrics_dir) if self.settings.metrics_dir else None
        )
        while not stop.is_set():
            metrics.WRITER_BACKLOG.set(self.writer.backlog())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async def aclose(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.aclose()
        if self.chat is not None:
            await self.chat.hub.drain()
            await self.chat.bus.aclose()
        await self.writer.aclose()
        if self.live_now is not None:
            await self.live_now.aclose()
        if self.limiter is not None:
            await self.limiter.aclose()
        await self.ingestor.live.aclose()
        if self.checkpointer is not None:
            self.checkpointer.close()
        self.ingestor.geo.close()
        self.ingestor.engine.dispose()


def build_runtime(settings: Settings, *, auto_migrate: bool = True) -> Runtime:
    workspace = load_workspace(settings.workspace or EXAMPLE_WORKSPACE)
    url = settings.resolved_database_url()
    sqlite = url.startswith("sqlite")
    engine = make_engine(url, background_checkpoint=sqlite)
    if auto_migrate:
        migrate(engine)
    writer = GroupCommitWriter(engine, max_events=settings.commit_max_batch)
    geo = GeoResolver(trust_headers=settings.trusted_proxy_headers, mmdb_path=settings.geoip_db)
    live = None
    if settings.redis_url:
        redis_url, prefix = settings.redis_url, settings.redis_prefix

        def live(loader: Loader) -> LiveStore:
            return RedisLiveStore(redis_url, loader, prefix=prefix)

    rules = RuleBook(workspace, engine)
    rules.refresh()
    ingestor = Ingestor(
        settings=settings,
        engine=engine,
        writer=writer,
        geo=geo,
        live=live,
        rules=rules,
        scorer=_scorer(settings, rules),
    )
    if workspace.queues:
        ingestor.engager.board.refresh(engine)
    return Runtime(
        settings,
        workspace,
        ingestor,
        writer,
        rules,
        Checkpointer(engine) if sqlite else None,
        WebhookWorker(engine, secrets=settings.webhook_secrets),
        live_now=RedisLiveNow(ingestor.live_now, settings.redis_url, prefix=settings.redis_prefix)
        if settings.redis_url
        else None,
        rollups=Rollups(
            engine,
            margin_s=settings.rollup_margin_s,
            max_age_s=settings.max_event_age_s + settings.max_future_skew_s,
            interval_s=settings.rollup_interval_s,
        ),
        limiter=_limiter(settings),
    )


def _scorer(settings: Settings, rules: RuleBook) -> OutcomeScorer:
    """The active models of the scoring-enabled outcomes, from ``DATA_DIR/models``."""
    from opportune.engine.retraining import outcome_docs
    from opportune.ml.outcomes.registry import ModelRegistry
    from opportune.ml.outcomes.training import scoring_enabled

    registry = ModelRegistry(settings.data_dir / "models")

    def enabled() -> list[str]:
        return scoring_enabled(outcome_docs(rules))

    return OutcomeScorer(
        lambda: registry.active_models(enabled()),
        lambda: {o: registry.active_version(o) for o in enabled()},
    )


async def _journey_features(runtime: Runtime, visitor_id: str, now_ms: int) -> dict[str, float]:
    """The visitor's current segments and outcome probabilities, as routing features."""
    state = await runtime.ingestor.live.peek(visitor_id, now_ms)
    if state is None:
        return {}
    j = state.journey
    current = j is not None and j.session_id == state.track.session_id
    members = runtime.rules.ruleset.members(j if current else None, state.assignments, now_ms)
    out = {f"segment:{name}": 1.0 for name in members}
    if current and j is not None:
        out.update({f"score:{o}": float(s.probability) for o, s in j.scores.items()})
    return out


def create_app(settings: Settings, *, auto_migrate: bool = True) -> TrackingEndpoint:
    """The whole server: the tracking endpoint in front of the FastAPI app (``.app``).

    Start-up loads the workspace, migrates and starts the writer."""
    runtime = build_runtime(settings, auto_migrate=auto_migrate)
    # FastAPI's /docs and /redoc load their scripts from a CDN: ours are vendored (offline).
    app = FastAPI(
        title="Opportune",
        version=__version__,
        lifespan=_lifespan(runtime),
        docs_url=None,
        redoc_url=None,
    )
    install_api_docs(app)
    app.state.runtime = runtime
    # The snippet (30 KB raw) and JSON pages compress well; /v1/events answers are tiny
    # and bypass this app anyway.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    _include_admin(app, runtime)
    app.include_router(health_router(runtime))
    errors.install(app)
    _sdk_routes(app)
    app.include_router(widget_config_router(SitesNow(runtime.workspace.site_keys)))

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/demo/")

    if DEMO_DIR.is_dir():
        app.mount("/demo", demo_site(DEMO_DIR), name="demo")
    _agent_workspace(app, runtime)
    openapi.document(app)
    return TrackingEndpoint(
        app,
        runtime.ingestor,
        runtime.workspace.site_keys,
        settings.max_body_bytes,
        limiter=runtime.limiter,
        per_ip=_limit("per_ip", settings.rate_limit_events_per_ip, settings),
        per_site=_limit("per_site", settings.rate_limit_events_per_site, settings),
    )


def _limit(name: str, per_s: float, settings: Settings) -> Limit | None:
    """A limit of ``per_s`` a second (bursts of ``rate_limit_burst_s`` of it); 0: none."""
    if per_s <= 0:
        return None
    return Limit(name, per_s, max(1.0, per_s * settings.rate_limit_burst_s))


def _limiter(settings: Settings) -> Limiter:
    """Rate-limit buckets in Redis when the deployment shares it, else in memory."""
    if settings.redis_url and settings.rate_limit_store != "memory":
        return RedisLimiter(settings.redis_url, prefix=settings.redis_prefix)
    return MemoryLimiter()


class _Tasks:
    """The app's background loops, started at start-up and stopped in order at shutdown."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.stop = asyncio.Event()

    def start(self) -> None:
        rt, loop = self.runtime, asyncio.get_running_loop()
        self.watcher = loop.create_task(rt.watch_rules(self.stop))
        self.sampler = loop.create_task(rt.sample_metrics(self.stop))
        self.ticks = loop.create_task(rt.route_ticks(self.stop)) if rt.workspace.queues else None
        self.sender = loop.create_task(rt.webhooks.run()) if rt.webhooks else None
        self.chat = loop.create_task(rt.chat.run(self.stop)) if rt.chat else None
        self.live_now = loop.create_task(rt.live_now.run(self.stop)) if rt.live_now else None
        self.rollups = loop.create_task(rt.rollups.run(self.stop)) if rt.rollups else None
        self.retrain = self.routing_retrain = None
        if rt.settings.retrain_interval_h > 0:
            self._start_retraining(loop)

    def _start_retraining(self, loop: asyncio.AbstractEventLoop) -> None:
        from opportune.engine.retraining import retrain_loop, routing_retrain_loop
        from opportune.ml.schedule import FIRST_CHECK_AFTER_S

        rt, settings = self.runtime, self.runtime.settings
        interval_s = settings.retrain_interval_h * 3600
        self.retrain = loop.create_task(
            retrain_loop(
                settings,
                rt.rules,
                interval_s=interval_s,
                first_check_s=FIRST_CHECK_AFTER_S,
                on_activated=lambda _outcomes: rt.ingestor.scorer.refresh(),
            )
        )
        score = rt.router.score if rt.router is not None else None
        if score is not None and rt.workspace.queues:
            self.routing_retrain = loop.create_task(
                routing_retrain_loop(
                    settings,
                    rt.rules,
                    rt.ingestor.engine,
                    interval_s=interval_s,
                    first_check_s=FIRST_CHECK_AFTER_S,
                    on_activated=lambda _queues: score.refresh(),
                )
            )

    async def close(self) -> None:
        self.stop.set()
        await _cancel(self.routing_retrain)
        await self.watcher
        await self.sampler
        if self.ticks is not None:
            await self.ticks
        if self.chat is not None:
            await self.chat
        if self.live_now is not None:
            await self.live_now
        if self.rollups is not None:
            await self.rollups
        await _cancel(self.retrain)
        if self.sender is not None and self.runtime.webhooks is not None:
            self.runtime.webhooks.stop()  # let a pass in progress finish its database work
            await self.sender
        await self.runtime.aclose()


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _lifespan(runtime: Runtime) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = _Tasks(runtime)
        tasks.start()
        try:
            yield
        finally:
            await tasks.close()

    return lifespan


def _include_admin(app: FastAPI, runtime: Runtime) -> None:
    """The admin API's routers, and the routing engine they share with the route ticks."""
    from opportune.api.customers import customers_router
    from opportune.api.definitions import definitions_router
    from opportune.api.engagement import engagement_router
    from opportune.api.imports import imports_router
    from opportune.api.routing import routing_router
    from opportune.engine.router import Router
    from opportune.engine.routing_scorer import KpiScorer
    from opportune.ml.routing.registry import RoutingRegistry

    settings, ingestor, ws = runtime.settings, runtime.ingestor, runtime.workspace
    require_api_key = api_key_dependency(
        settings.api_key,
        engine=ingestor.engine,
        limiter=runtime.limiter,
        limit=_limit("per_key", settings.rate_limit_admin_per_key, settings),
    )
    app.include_router(
        customers_router(
            get_engine=lambda: ingestor.engine,
            on_evict=ingestor.live.evict,
            require_api_key=require_api_key,
        )
    )
    app.include_router(
        definitions_router(rules=runtime.rules, ingestor=ingestor, require_api_key=require_api_key)
    )
    app.include_router(engagement_router(ingestor=ingestor, require_api_key=require_api_key))
    app.include_router(
        imports_router(ingestor=ingestor, sites=ws.sites, require_api_key=require_api_key)
    )
    _include_reports(app, require_api_key)
    routing_models = RoutingRegistry(settings.data_dir / "routing-models")
    runtime.router = Router(
        ingestor.engine,
        queues=ws.queues,
        agents=ws.agents,
        kpis=ws.kpis,
        score=KpiScorer(routing_models, ws.agents, ws.queues),
        rules=runtime.rules,
    )
    app.include_router(
        routing_router(
            router=runtime.router,
            require_api_key=require_api_key,
            journey=lambda visitor_id, now_ms: _journey_features(runtime, visitor_id, now_ms),
            registry=routing_models,
        )
    )
    _include_chat(app, runtime)


def _include_reports(app: FastAPI, require_api_key: Any) -> None:
    """Historical reports: ``/v1/reports/...`` (API key) and the pages at ``/reports``."""
    from starlette.staticfiles import StaticFiles

    from opportune.api.report_pages import REPORTS_DIR, report_pages_router
    from opportune.api.reports import reports_router

    app.include_router(reports_router(require_api_key))
    static = StaticFiles(directory=REPORTS_DIR / "static")
    app.mount("/reports/static", static, name="reports-static")
    app.include_router(report_pages_router())
    from opportune.api.live_pages import LIVE_DIR, live_pages_router  # Live Now (issue 15)

    app.mount("/live/static", StaticFiles(directory=LIVE_DIR / "static"), name="live-static")
    app.include_router(live_pages_router())


def _include_chat(app: FastAPI, runtime: Runtime) -> None:
    """Conversations: the visitor's socket and the agent desk's, on one hub and bus."""
    from opportune.api.chat import chat_router
    from opportune.api.desk_socket import desk_socket_router
    from opportune.engine.bots import BotRunner
    from opportune.engine.bus import Bus, MemoryBus, RedisBus
    from opportune.engine.chat import ChatService
    from opportune.engine.conversations import ConversationHub

    settings, ingestor, ws = runtime.settings, runtime.ingestor, runtime.workspace
    assert runtime.router is not None
    bus: Bus = (
        RedisBus(settings.redis_url, prefix=settings.redis_prefix)
        if settings.redis_url
        else MemoryBus()
    )
    hub = ConversationHub(ingestor.engine, bus, grace_ms=settings.chat_grace_s * 1000)
    runtime.chat = ChatService(
        hub,
        runtime.router,
        maps=lambda: {m.name: m for m in runtime.rules.maps},
        live=ingestor.live,
        journey=lambda visitor_id, now_ms: _journey_features(runtime, visitor_id, now_ms),
        board=ingestor.engager.board,
        bots=BotRunner(ws.bot_flows) if ws.bot_flows else None,
        agent_names={a.name: a.display_name or a.name for a in ws.agents.values()},
    )
    app.include_router(chat_router(chat=runtime.chat, sites_by_key=SitesNow(ws.site_keys)))
    app.include_router(
        desk_socket_router(chat=runtime.chat, authenticate=_desk_authenticator(runtime))
    )


def _desk_authenticator(runtime: Runtime) -> Any:
    """The principal of a desk socket's session cookie, by the rule the pages use
    (``api/people.person_of``)."""
    from opportune.api.people import COOKIE, person_of

    async def authenticate(socket: Any) -> Any:
        assert runtime.chat is not None and runtime.router is not None
        token, now = socket.cookies.get(COOKIE), int(time.time() * 1000)
        agents, queues = runtime.workspace.agents, runtime.router.docs
        found = await runtime.chat.hub.run(
            lambda: person_of(
                runtime.ingestor.engine, token, now_ms=now, agents=agents, queues=queues
            )
        )
        return found[1] if found is not None else None

    return authenticate


def _agent_workspace(app: FastAPI, runtime: Runtime) -> None:
    """The agent workspace: sign-in, the desk, its JSON, the context panel's and its
    static files."""
    from starlette.staticfiles import StaticFiles

    from opportune.api.agent_api import agent_api_router
    from opportune.api.agent_context import agent_context_router
    from opportune.api.agent_pages import AGENT_DIR, agent_pages_router
    from opportune.api.people import require_person

    app.include_router(agent_pages_router())
    app.include_router(agent_api_router())
    app.include_router(
        agent_context_router(
            require_person=require_person(),
            ingestor=runtime.ingestor,
            rules=runtime.rules,
            workspace=runtime.workspace,
        )
    )
    app.mount("/agent/static", StaticFiles(directory=AGENT_DIR / "static"), name="agent-static")
    from opportune.api.console import install_console  # the admin console (issue 15)

    install_console(app)


def _sdk_routes(app: FastAPI) -> None:
    """The snippet and the widget, minified, compressed and cacheable from any site."""
    app.include_router(assets_router())

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}
