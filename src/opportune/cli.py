"""The ``opportune`` command line: serve, demo, migrate, config, gdpr."""

from __future__ import annotations

import gc
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from opportune.settings import Settings


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the options given on the command line on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        for err in exc.errors():
            name = "OPPORTUNE_" + "_".join(str(p) for p in err["loc"]).upper()
            click.echo(f"error: setting {name}: {err['msg']}", err=True)
        sys.exit(2)


_common = [
    click.option("--data-dir", type=click.Path(path_type=Path), help="Folder for data files"),
    click.option("--database-url", help="sqlite:///path or postgresql://user@host/db"),
    click.option(
        "--workspace",
        type=click.Path(path_type=Path, exists=True, file_okay=False),
        help="Workspace folder of YAML documents",
    ),
]


def common(fn: Any) -> Any:
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


@click.group()
@click.version_option(package_name="opportune")
def main() -> None:
    """Opportune: predictive engagement and predictive routing, self-hosted."""


def _run_server(settings: Settings) -> None:
    # NumPy's OpenBLAS threads keep spinning after a small matrix operation (pacing) and
    # take the core from the event loop; the server's linear algebra is tiny. Set before
    # NumPy loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import uvicorn

    from opportune.api.app import create_app
    from opportune.workspace import ConfigError

    try:
        app = create_app(settings)
    except ConfigError as exc:
        click.echo("error: the workspace does not validate:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(2)
    # Everything built at start-up lives as long as the process: keep the collector from
    # scanning it again and again.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        loop="auto",
        http="auto",
    )


@main.command()
@common
@click.option("--host")
@click.option("--port", type=int)
@click.option("--api-key", help="Key for the admin API (X-API-Key)")
def serve(**opts: Any) -> None:
    """Run the server (embedded SQLite by default, PostgreSQL with --database-url)."""
    settings = _settings(**opts)
    click.echo(f"Opportune listening on http://{settings.host}:{settings.port}")
    _run_server(settings)


# The demo's simulated history: big enough that every example outcome has a model worth
# showing, small enough that backfill and training take ~30 s on two busy cores.
DEMO_HISTORY_DAYS = 4
DEMO_VISITORS_PER_DAY = 1200
DEMO_SEED = 1


@main.command()
@common
@click.option("--host")
@click.option("--port", type=int)
@click.option("--api-key", help="Admin API key for this run (default: a fresh random one)")
@click.option(
    "--agents",
    type=click.IntRange(0, 100),
    default=2,
    show_default=True,
    help="Agents present on each chat queue, so chat offers can be made (0: none)",
)
@click.option(
    "--no-model",
    is_flag=True,
    help="Start without outcome models: no simulated history, no training",
)
@click.option(
    "--history-days",
    type=click.IntRange(1, 60),
    default=DEMO_HISTORY_DAYS,
    show_default=True,
    help="Days of simulated history to backfill when a model is missing",
)
@click.option(
    "--visitors-per-day",
    type=click.IntRange(50, 100_000),
    default=DEMO_VISITORS_PER_DAY,
    show_default=True,
    help="Simulated visits per day of that history",
)
@click.option(
    "--traffic",
    is_flag=True,
    help="Also send live simulated visitors to the server, so Live Now has people",
)
@click.option(
    "--traffic-rate",
    type=click.FloatRange(0.01, 50),
    default=0.5,
    show_default=True,
    help="With --traffic: new simulated visits per second",
)
def demo(
    api_key: str | None,
    agents: int,
    no_model: bool,
    history_days: int,
    visitors_per_day: int,
    traffic: bool,
    traffic_rate: float,
    **opts: Any,
) -> None:
    """Start the server with the example workspace and the demo website.

    Unless --no-model, every scoring-enabled outcome without an active model gets one
    first: simulated history is backfilled (as `opportune simulate web` does) when the
    database does not hold enough, the models are trained (as `opportune train --force`
    does) and activated, and only then does the server start, scoring every event.
    """
    api_key = api_key or secrets.token_urlsafe(18)
    settings = _settings(**opts, api_key=api_key)
    simulator = None
    if not no_model:
        simulator = _demo_models(settings, opts, history_days, visitors_per_day)
    if agents:
        _demo_agents(settings, agents)
    base = f"http://{settings.host}:{settings.port}"
    if traffic:
        _demo_traffic(settings, base, traffic_rate, simulator)
    click.echo(f"Opportune demo on {base}/demo/  (data in {settings.data_dir}/)")
    click.echo(f"Admin API key for this run: {api_key}")
    click.echo(f"  e.g. curl -H 'X-API-Key: {api_key}' {base}/v1/visitors/<visitorId>/live")
    _run_server(settings)


def _demo_models(settings: Settings, opts: dict[str, Any], days: int, per_day: int) -> Any:
    """Active models for the scoring-enabled outcomes that lack one; the simulator of the
    history backfilled for them (its visitors may come back live), or None."""
    import os

    # As in `train`: LightGBM's OpenMP threads must not spin (set before it is loaded).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from opportune.engine.retraining import outcome_docs
    from opportune.ml.outcomes.model import TrainingConfig, headline
    from opportune.ml.outcomes.training import (
        DAY_MS,
        DEFAULT_DAYS,
        check_readiness,
        scoring_enabled,
        train_outcomes,
    )
    from opportune.store.visits import StoredVisits

    engine, rules, registry, timeout_ms = _training_context(opts)
    try:
        enabled = scoring_enabled(outcome_docs(rules))
        missing = [o for o in enabled if registry.active_version(o) is None]
        if not missing:
            if enabled:
                active = ", ".join(f"{o} {registry.active_version(o)}" for o in enabled)
                click.echo(f"outcome models active: {active}")
            return None
        started = time.perf_counter()
        now = int(time.time() * 1000)
        window = {"since_ms": now - DEFAULT_DAYS * DAY_MS, "until_ms": now - timeout_ms}
        ready = check_readiness(
            StoredVisits(engine), outcome_docs(rules), registry, missing, **window
        )
        simulator = None
        if not all(r.ready for r in ready.values()):
            click.echo(
                f"no active model for {', '.join(missing)}: simulating {days} day(s) of "
                f"history, {per_day} visits a day (--no-model skips this)"
            )
            simulator, accepted = _demo_backfill(settings, days, per_day)
            click.echo(f"  backfilled {accepted} events in {time.perf_counter() - started:.1f} s")
        click.echo(f"training {len(missing)} outcome model(s)...")
        t = time.perf_counter()
        threads = min(2, os.cpu_count() or 1)
        with registry.training_lock() as mine:
            if not mine:
                click.echo("  another process is training models right now; not waiting")
                return simulator
            # Forced: the rarest outcomes may fall a little short of their readiness
            # thresholds on a small simulated history, and the demo is there to show scores.
            reports = train_outcomes(
                StoredVisits(engine),
                rules.ruleset,
                outcome_docs(rules),
                registry,
                now_ms=int(time.time() * 1000),
                outcomes=missing,
                session_timeout_ms=timeout_ms,
                force=True,
                config=TrainingConfig(num_threads=threads),
                workers=threads,
                progress=sys.stderr.isatty(),
            )
        for r in reports:
            click.echo(f"  {r.outcome}: {r.message}")
            if r.card is not None:
                click.echo(f"    {headline(r.card)}")
        click.echo(
            f"  trained in {time.perf_counter() - t:.1f} s "
            f"(models ready {time.perf_counter() - started:.1f} s after start)"
        )
        return simulator
    finally:
        engine.dispose()


def _demo_backfill(settings: Settings, days: int, per_day: int) -> tuple[Any, int]:
    """Simulated history through the real ingestion, ending at the last midnight (UTC).

    Starting on a day boundary makes the history the same every run (the simulator draws
    arrivals by hour of day), so every fresh demo trains the same models."""
    import asyncio

    from opportune.api.app import build_runtime
    from opportune.sim.web import DAY_MS, WebSimulator, generate

    runtime = build_runtime(settings)
    site = next(iter(runtime.workspace.sites_by_key.values()))
    simulator = WebSimulator(DEMO_SEED, site_key=site.key)
    start = int(time.time() * 1000) // DAY_MS * DAY_MS - days * DAY_MS
    sessions = generate(
        DEMO_SEED, start_ms=start, days=days, visitors_per_day=per_day, simulator=simulator
    )
    accepted, _refused = asyncio.run(_backfill(runtime, site, sessions, days * per_day))
    return simulator, accepted


def _demo_traffic(settings: Settings, base: str, rate: float, simulator: Any) -> None:
    """Simulated visitors posted live to this server from a background thread, once it
    answers; they arrive at ``rate`` a second, at real speed, until the demo stops."""
    import asyncio
    import threading

    import httpx

    from opportune.api.app import EXAMPLE_WORKSPACE
    from opportune.sim.live import send_live
    from opportune.workspace import load_workspace

    ws = load_workspace(settings.workspace or EXAMPLE_WORKSPACE)
    site_key = next(iter(ws.sites_by_key))
    url = f"http://127.0.0.1:{settings.port}" if settings.host in ("0.0.0.0", "::") else base

    def run() -> None:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        asyncio.run(
            send_live(
                url,
                site_key,
                seed=DEMO_SEED + 1,
                rate=rate,
                duration_s=365 * 86_400.0,
                history=simulator,
            )
        )

    threading.Thread(target=run, name="demo-traffic", daemon=True).start()
    click.echo(f"live simulated traffic: {rate:g} new visits a second (--traffic)")


def _demo_agents(settings: Settings, n: int) -> None:
    """Agents present for the demo: each queue's presence, and the workspace's agents
    available (what an operator sets over the API)."""
    from sqlalchemy import delete

    from opportune.api.app import EXAMPLE_WORKSPACE
    from opportune.store.db import make_engine
    from opportune.store.db import migrate as run
    from opportune.store.schema import agent_state, queue_presence
    from opportune.workspace import load_workspace

    ws = load_workspace(settings.workspace or EXAMPLE_WORKSPACE)
    engine = make_engine(settings.resolved_database_url())
    run(engine)
    now = int(time.time() * 1000)
    with engine.begin() as conn:
        for name in ws.queues:
            conn.execute(delete(queue_presence).where(queue_presence.c.queue == name))
            conn.execute(
                queue_presence.insert().values(
                    queue=name, agents_available=n, busy_slots=0, waiting=0, updated_at=now
                )
            )
        for name in ws.agents:
            conn.execute(delete(agent_state).where(agent_state.c.agent_id == name))
            conn.execute(
                agent_state.insert().values(
                    agent_id=name,
                    presence="available",
                    idle_since=now,
                    last_assigned=0,
                    updated_at=now,
                )
            )
    engine.dispose()
    click.echo(f"{n} agent(s) present on each chat queue (--agents 0 for none)")


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path))
@click.option("--database-url")
def migrate(**opts: Any) -> None:
    """Create or upgrade the database schema."""
    from opportune.store.db import current_revision, make_engine
    from opportune.store.db import migrate as run

    settings = _settings(**opts)
    engine = make_engine(settings.resolved_database_url())
    run(engine)
    click.echo(f"database at revision {current_revision(engine)}")


@main.group()
def config() -> None:
    """Workspace configuration."""


@config.command("validate")
@click.argument("folder", type=click.Path(path_type=Path))
def config_validate(folder: Path) -> None:
    """Validate a workspace folder; print every problem with file, line and field."""
    from opportune.workspace import ConfigError, load_workspace

    try:
        ws = load_workspace(folder)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo(
        f"ok: {len(ws.sites)} site(s), {len(ws.segments)} segment(s), "
        f"{len(ws.outcomes)} outcome(s), {len(ws.page_groups)} page group(s), "
        f"{len(ws.action_maps)} action map(s), {len(ws.queues)} queue(s)"
    )


@main.group()
def gdpr() -> None:
    """Export or erase a customer's data; purge data past retention."""


def _engine(opts: dict[str, Any]) -> Any:
    from opportune.store.db import make_engine
    from opportune.store.db import migrate as run

    settings = _settings(**opts)
    engine = make_engine(settings.resolved_database_url())
    run(engine)
    return engine, settings


@gdpr.command("export")
@click.argument("customer_id")
@click.option("--out", type=click.Path(path_type=Path), help="File to write (default stdout)")
@click.option("--data-dir", type=click.Path(path_type=Path))
@click.option("--database-url")
def gdpr_export(customer_id: str, out: Path | None, **opts: Any) -> None:
    """Everything held about a customer, as JSON."""
    from opportune.store.customers import CustomerNotFound, export_customer

    engine, _ = _engine(opts)
    try:
        with engine.connect() as conn:
            data = export_customer(conn, customer_id)
    except CustomerNotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    text = json.dumps(data, indent=2, default=str)
    if out:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}")
    else:
        click.echo(text)


@gdpr.command("erase")
@click.argument("customer_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation")
@click.option("--data-dir", type=click.Path(path_type=Path))
@click.option("--database-url")
def gdpr_erase(customer_id: str, yes: bool, **opts: Any) -> None:
    """Erase a customer and all its visitors' data, irreversibly."""
    from opportune.store.customers import CustomerNotFound, erase_customer

    if not yes:
        click.confirm(f"Erase customer {customer_id} irreversibly?", abort=True)
    engine, _ = _engine(opts)
    try:
        with engine.begin() as conn:
            counts = erase_customer(conn, customer_id, now_ms=int(time.time() * 1000))
    except CustomerNotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps(_jsonable(counts)))


@gdpr.command("purge")
@click.option("--days", type=int, help="Retention in days (default OPPORTUNE_RETENTION_DAYS)")
@click.option("--data-dir", type=click.Path(path_type=Path))
@click.option("--database-url")
def gdpr_purge(days: int | None, **opts: Any) -> None:
    """Delete events and sessions older than the retention period."""
    from opportune.store.customers import purge_older_than

    engine, settings = _engine(opts)
    keep = days if days is not None else settings.retention_days
    if keep < 1:
        click.echo("error: --days must be at least 1", err=True)
        sys.exit(2)
    cutoff = int(time.time() * 1000) - keep * 86_400_000
    with engine.begin() as conn:
        counts = purge_older_than(conn, cutoff)
    click.echo(json.dumps(_jsonable(counts)))


@main.group()
def simulate() -> None:
    """Simulators with ground truth: web traffic and a contact centre."""


@simulate.command("contact-center")
@common
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--days", type=click.IntRange(1, 400), default=20, show_default=True)
@click.option(
    "--regime",
    type=click.Choice(["agents", "interactions"]),
    default="agents",
    show_default=True,
    help="agents: agents in surplus (60% occupancy); interactions: calls queue (105%)",
)
@click.option(
    "--history",
    is_flag=True,
    help="Write the longest-idle run into the database as queue 'sales' (ending now)",
)
@click.option(
    "--workspace-out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write the center's queue, KPI and agents as workspace YAML into this folder",
)
def simulate_contact_center(
    seed: int,
    days: int,
    regime: str,
    history: bool,
    workspace_out: Path | None,
    **opts: Any,
) -> None:
    """A simulated contact centre (SimPy, arrivals from a real bank's call counts) routed
    by the real routing core: longest idle, best skill and the oracle (true probabilities)
    on the same calls. For the learnt policies and the whole comparison, see
    bench/routing.py."""
    from opportune.core.routing import PredictiveSettings
    from opportune.sim.center_history import workspace_yaml, write_history
    from opportune.sim.contact_center import (
        AGENT_SURPLUS,
        INTERACTION_SURPLUS,
        Center,
        Policy,
        oracle_scorer,
        simulate,
    )

    center = Center(AGENT_SURPLUS if regime == "agents" else INTERACTION_SURPLUS, seed)
    stream = center.arrivals(days=days, seed=seed)
    oracle = PredictiveSettings(enabled=True, min_free_agents=1, kpi_name="sales conversion")
    runs = {
        "longest idle": Policy("longest idle", "standard", center.queue()),
        "best skill": Policy("best skill", "standard", center.queue(strategy="best_skill")),
        "oracle": Policy(
            "oracle", "assignment", center.queue(predictive=oracle), oracle_scorer(center)
        ),
    }
    results = {}
    click.echo(f"{len(stream)} calls over {days} weekdays, {len(center.agents)} agents, {regime}")
    click.echo(f"{'policy':<14}{'KPI':>8}{'ASA s':>8}{'SL 20s':>8}{'abandon':>9}")
    for name, policy in runs.items():
        results[name] = simulate(center, stream, policy, seed=seed)
        m = results[name].metrics()
        click.echo(
            f"{name:<14}{m['kpi']:>8.4f}{m['asa_s']:>8.1f}{m['service_level']:>8.3f}"
            f"{m['abandonment']:>9.3f}"
        )
    if workspace_out is not None:
        workspace_out.mkdir(parents=True, exist_ok=True)
        (workspace_out / "contact-center.yaml").write_text(workspace_yaml(center), "utf-8")
        click.echo(f"workspace: {workspace_out / 'contact-center.yaml'}")
    if history:
        from opportune.store.db import make_engine
        from opportune.store.db import migrate as run

        settings = _settings(**opts)
        engine = make_engine(settings.resolved_database_url())
        run(engine)
        result = results["longest idle"]
        last = max(r.arrived_ms for r in result.records)
        n = write_history(engine, result, shift_ms=int(time.time() * 1000) - last)
        engine.dispose()
        click.echo(f"history: {n} interactions of queue 'sales' written (longest idle)")


@simulate.command("web")
@common
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--days", type=int, default=7, show_default=True, help="Days of history")
@click.option("--visitors-per-day", type=int, default=300, show_default=True)
@click.option("--site-key", help="Site to simulate (default: the workspace's first site)")
@click.option(
    "--live",
    "live_url",
    help="Send live traffic to this server instead, e.g. http://127.0.0.1:8000",
)
@click.option(
    "--rate", type=float, default=2.0, show_default=True, help="Live: new visits per second"
)
@click.option(
    "--duration", type=float, default=60.0, show_default=True, help="Live: seconds to run"
)
@click.option(
    "--time-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Live: how much faster than real visitors to play",
)
def simulate_web(
    seed: int,
    days: int,
    visitors_per_day: int,
    site_key: str | None,
    live_url: str | None,
    rate: float,
    duration: float,
    time_scale: float,
    **opts: Any,
) -> None:
    """Simulated visitors of the demo site, through the real ingestion.

    Without --live: a backfill of DAYS days of history into the configured database,
    through the same ingestion code as /v1/events (timestamps as the server would have
    seen them). With --live: batches posted over HTTP to a running server in real time.
    """
    import asyncio

    if days < 1 or visitors_per_day < 1:
        click.echo("error: --days and --visitors-per-day must be at least 1", err=True)
        sys.exit(2)
    settings = _settings(**opts)
    if live_url:
        from opportune.sim.live import send_live

        stats = asyncio.run(
            send_live(
                live_url.rstrip("/"),
                site_key or "demo-site-key",
                seed=seed,
                rate=rate,
                duration_s=duration,
                time_scale=time_scale,
            )
        )
        click.echo(
            f"sent {stats.events} events; answers {dict(sorted(stats.statuses.items()))}"
            f"; network errors {stats.errors}"
        )
        return
    from opportune.api.app import build_runtime

    runtime = build_runtime(settings)
    sites = runtime.workspace.sites_by_key
    site = sites.get(site_key) if site_key else next(iter(sites.values()), None)
    if site is None:
        click.echo(f"error: no site with key {site_key!r} in the workspace", err=True)
        sys.exit(2)
    from opportune.sim.web import generate

    start = int(time.time() * 1000) - days * 86_400_000
    sessions = generate(
        seed, start_ms=start, days=days, visitors_per_day=visitors_per_day, site_key=site.key
    )
    accepted, refused = asyncio.run(_backfill(runtime, site, sessions, days * visitors_per_day))
    click.echo(
        f"backfilled {accepted} events of {days} day(s) into "
        f"{settings.resolved_database_url().split('@')[-1]}; refused {refused}"
    )


async def _backfill(runtime: Any, site: Any, sessions: Any, visitors: int) -> tuple[int, int]:
    """``sessions`` (from ``sim.web.generate``) through the real ingestion, with the
    server's clock of each batch; closes ``runtime``. Returns (accepted, refused)."""
    import asyncio

    from rich.progress import Progress

    from opportune.sim.web import to_batches

    accepted = refused = 0
    window: list[Any] = []

    async def drain() -> None:
        nonlocal accepted, refused
        # Tasks start in arrival order, so one visitor's batches keep their order.
        results = await asyncio.gather(
            *[
                runtime.ingestor.ingest(
                    sb.batch,
                    site,
                    now_ms=sb.received_ms,
                    headers={"user-agent": sb.user_agent},
                    peer=None,
                )
                for sb in window
            ]
        )
        accepted += sum(r.accepted for r in results)
        refused += sum(len(r.refused) for r in results)
        window.clear()

    try:
        with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
            task = progress.add_task("backfill", total=visitors)
            seen: set[str] = set()
            for sb in to_batches(sessions):
                window.append(sb)
                if sb.batch.visitor_id not in seen:
                    seen.add(sb.batch.visitor_id)
                    progress.advance(task)
                if len(window) >= 256:
                    await drain()
            await drain()
    finally:
        await runtime.aclose()
    return accepted, refused


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return {k: v for k, v in asdict(value).items() if not isinstance(v, list)}
    return value


# ---- outcome models ------------------------------------------------------------------------


def _training_context(opts: dict[str, Any]) -> tuple[Any, Any, Any, int]:
    """The database (migrated), the rules in force, the model registry and the longest
    session timeout of the workspace's sites (visits younger than that may not be over)."""
    from opportune.api.app import EXAMPLE_WORKSPACE
    from opportune.engine.rules import RuleBook
    from opportune.ml.outcomes.registry import ModelRegistry
    from opportune.store.db import make_engine
    from opportune.store.db import migrate as run
    from opportune.workspace import ConfigError, load_workspace

    settings = _settings(**opts)
    try:
        workspace = load_workspace(settings.workspace or EXAMPLE_WORKSPACE)
    except ConfigError as exc:
        click.echo("error: the workspace does not validate:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(2)
    engine = make_engine(settings.resolved_database_url())
    run(engine)
    rules = RuleBook(workspace, engine)
    rules.refresh()
    timeout_ms = max(
        [s.session_timeout_minutes * 60_000 for s in workspace.sites.values()]
        or [settings.session_timeout_s * 1000]
    )
    return engine, rules, ModelRegistry(settings.data_dir / "models"), timeout_ms


@main.command()
@common
@click.argument("what", type=click.Choice(["outcomes", "routing"]), default="outcomes")
@click.option(
    "--outcome",
    "outcomes",
    multiple=True,
    help="Outcome to train (repeatable; default: every scoring-enabled outcome)",
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    help="routing: queue to train (repeatable; default: every predictive queue with a KPI)",
)
@click.option("--days", type=int, default=90, show_default=True, help="Days of history")
@click.option("--force", is_flag=True, help="Train even if the history is not ready yet")
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="LightGBM threads (and processes replaying the visits)",
)
def train(
    what: str,
    outcomes: tuple[str, ...],
    queues: tuple[str, ...],
    days: int,
    force: bool,
    threads: int,
    **opts: Any,
) -> None:
    """Train outcome models on the stored visits (default), or with ROUTING the KPI model of
    each predictive queue on its interactions; activate each one that is not worse."""
    import os

    if what == "routing":
        _train_routing(queues, days, force, opts)
        return

    # LightGBM's OpenMP threads spin while they wait by default: on a machine that also
    # serves traffic that wastes a core and, with a busy neighbour, slows training down
    # several times. Set before LightGBM (and its OpenMP runtime) is loaded.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from opportune.engine.retraining import outcome_docs
    from opportune.ml.outcomes.model import TrainingConfig, TrainingError, headline
    from opportune.ml.outcomes.training import scoring_enabled, train_outcomes
    from opportune.store.visits import StoredVisits

    if days < 1:
        click.echo("error: --days must be at least 1", err=True)
        sys.exit(2)
    engine, rules, registry, timeout_ms = _training_context(opts)
    names = list(outcomes) or scoring_enabled(outcome_docs(rules))
    if not names:
        click.echo(
            "no outcome has scoring enabled (scoring: {enabled: true} in its document); "
            "name one with --outcome",
            err=True,
        )
        sys.exit(1)
    with registry.training_lock() as mine:
        if not mine:
            click.echo("error: another process is training models right now", err=True)
            sys.exit(3)
        try:
            reports = train_outcomes(
                StoredVisits(engine),
                rules.ruleset,
                outcome_docs(rules),
                registry,
                now_ms=int(time.time() * 1000),
                outcomes=names,
                days=days,
                session_timeout_ms=timeout_ms,
                force=force,
                config=TrainingConfig(num_threads=threads),
                workers=min(threads, os.cpu_count() or 1),
                progress=sys.stderr.isatty(),
            )
        except TrainingError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
    for r in reports:
        click.echo(f"{r.outcome}: {r.message}")
        if r.card is not None:
            click.echo(f"  {headline(r.card)}")
            click.echo(f"  card: {registry.root / r.outcome / str(r.version) / 'card.json'}")
    if not any(r.trained for r in reports):
        sys.exit(1)


def _train_routing(queues: tuple[str, ...], days: int, force: bool, opts: dict[str, Any]) -> None:
    from opportune.ml.routing.registry import RoutingRegistry
    from opportune.ml.routing.training import RoutingTrainingError, train_routing
    from opportune.store.routing_history import StoredRoutingHistory

    if days < 1:
        click.echo("error: --days must be at least 1", err=True)
        sys.exit(2)
    engine, rules, *_ = _training_context(opts)
    ws = rules.workspace
    # The KPIs and queue KPIs set over the API count as much as the workspace's.
    all_queues, all_kpis = rules.queues(), rules.kpis()
    names = list(queues) or [
        n for n, q in all_queues.items() if q.predictive.enabled and q.kpi in all_kpis
    ]
    if not names:
        click.echo(
            "no queue has predictive routing on with a KPI (predictive: {enabled: true} and "
            "kpi: in its document); name one with --queue",
            err=True,
        )
        sys.exit(1)
    registry = RoutingRegistry(_settings(**opts).data_dir / "routing-models")
    trained = False
    with registry.training_lock() as mine:
        if not mine:
            click.echo("error: another process is training routing models right now", err=True)
            sys.exit(3)
        for name in names:
            try:
                r = train_routing(
                    StoredRoutingHistory(engine),
                    queue=name,
                    queues=all_queues,
                    agents=ws.agents,
                    kpis=all_kpis,
                    registry=registry,
                    days=days,
                    force=force,
                    progress=lambda m: click.echo(m, err=True),
                )
            except RoutingTrainingError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(1)
            click.echo(f"{name}: {r.status}")
            if r.card is not None:
                trained = True
                h = r.card["model"].get("holdout", {})
                b = r.card.get("benefit", {})
                fig = ", ".join(f"{k} {v:.4g}" for k, v in h.items() if isinstance(v, float))
                click.echo(f"  holdout: {fig}")
                if "uplift" in b:
                    click.echo(
                        f"  benefit assessment: {b['uplift']:+.4f} ({b['ciLow']:+.4f} to "
                        f"{b['ciHigh']:+.4f}) on {b['decisions']} decisions, "
                        f"observed {b['observed']:.4f}"
                    )
                click.echo(f"  card: {registry.root / name / str(r.version) / 'card.json'}")
    if not trained:
        sys.exit(1)


@main.group()
def models() -> None:
    """Outcome models in the registry: list, activate, roll back."""


def _registry(opts: dict[str, Any]) -> Any:
    from opportune.ml.outcomes.registry import ModelRegistry

    return ModelRegistry(_settings(**opts).data_dir / "models")


@models.command("list")
@click.option("--outcome", help="Only this outcome")
@click.option("--data-dir", type=click.Path(path_type=Path))
def models_list(outcome: str | None, **opts: Any) -> None:
    """Every saved version with its test figures; * marks the active one."""
    registry = _registry(opts)
    names = [outcome] if outcome else registry.outcomes()
    if not names:
        click.echo(f"no models under {registry.root}")
        return
    for name in names:
        active = registry.active_version(name)
        click.echo(f"{name} (active: {active or 'none'})")
        for v in registry.versions(name):
            card = registry.card(name, v)
            t = card.get("test", {})
            check = card.get("activation") or {}

            def f(x: Any, nd: int = 3) -> str:
                return "n/a" if x is None else f"{x:.{nd}f}"

            click.echo(
                f"  {'*' if v == active else ' '} {v:<5} trained {card.get('trainedAt')}  "
                f"visits {card.get('data', {}).get('visits')}  AUC {f(t.get('rocAuc'))}  "
                f"Brier {f(t.get('brier'), 4)}  ECE {f(t.get('ece'), 4)}  "
                f"{'passed' if check.get('notWorse', True) else 'refused'}: "
                f"{check.get('reason', '')}"
            )


@models.command("activate")
@click.argument("outcome")
@click.argument("version")
@click.option("--force", is_flag=True, help="Activate even a version that failed its check")
@click.option("--data-dir", type=click.Path(path_type=Path))
def models_activate(outcome: str, version: str, force: bool, **opts: Any) -> None:
    """Make VERSION the active model of OUTCOME."""
    from opportune.ml.registry import ActivationRefused, RegistryError

    registry = _registry(opts)
    try:
        registry.activate(outcome, version, force=force)
    except ActivationRefused as exc:
        click.echo(f"refused: {exc} (--force)", err=True)
        sys.exit(1)
    except RegistryError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{outcome}: {version} is active")


@models.command("rollback")
@click.argument("outcome")
@click.option("--data-dir", type=click.Path(path_type=Path))
def models_rollback(outcome: str, **opts: Any) -> None:
    """Re-activate the version that was active before the current one."""
    from opportune.ml.registry import RegistryError

    registry = _registry(opts)
    try:
        version = registry.rollback(outcome)
    except RegistryError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{outcome}: rolled back to {version}")


if __name__ == "__main__":
    main()
