"""``opportune demo``: the server with the example workspace, models, agents and traffic."""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

import click

from opportune.cli.options import common, open_database, server_options, settings_from, shown
from opportune.cli.serve import run_server
from opportune.cli.simulate import backfill
from opportune.cli.train import quiet_openmp, train_now, training_context
from opportune.settings import Settings

# The demo's simulated history: big enough that every example outcome has a model worth
# showing, small enough that backfill and training take ~30 s on two busy cores.
DEMO_HISTORY_DAYS = 4
DEMO_VISITORS_PER_DAY = 1200
DEMO_SEED = 1


@click.command()
@common
@server_options("Admin API key for this run (default: a fresh random one)")
@shown(
    "--agents",
    type=click.IntRange(0, 100),
    default=2,
    help="Agents present on each chat queue, so chat offers can be made (0: none)",
)
@click.option(
    "--no-model",
    is_flag=True,
    help="Start without outcome models: no simulated history, no training",
)
@shown(
    "--history-days",
    type=click.IntRange(1, 60),
    default=DEMO_HISTORY_DAYS,
    help="Days of simulated history to backfill when a model is missing",
)
@shown(
    "--visitors-per-day",
    type=click.IntRange(50, 100_000),
    default=DEMO_VISITORS_PER_DAY,
    help="Simulated visits per day of that history",
)
@click.option(
    "--traffic/--no-traffic",
    default=True,
    show_default=True,
    help="Send live simulated visitors, so Live Now, chat offers and reports fill up",
)
@shown(
    "--traffic-rate",
    type=click.FloatRange(0.01, 50),
    default=0.5,
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
    settings = settings_from(**opts, api_key=api_key)
    simulator = None
    if not no_model:
        simulator = _demo_models(settings, opts, history_days, visitors_per_day)
    if agents:
        demo_agents(settings, agents)
    people = demo_people(settings)
    base = f"http://{settings.host}:{settings.port}"
    if traffic:
        _demo_traffic(settings, base, traffic_rate, simulator)
    click.echo(f"Opportune demo on {base}/demo/  (data in {settings.data_dir}/)")
    click.echo(f"Admin API key for this run: {api_key}")
    click.echo(f"  e.g. curl -H 'X-API-Key: {api_key}' {base}/v1/visitors/<visitorId>/live")
    click.echo(f"Agent workspace: {base}/agent  sign in as")
    for email, role, password in people:
        click.echo(f"  {role:<6} {email}  password {password}")
    click.echo(
        f"Console: {base}/console  Live Now: {base}/live  Reports: {base}/reports"
        "  (sign in as the admin)"
    )
    run_server(settings)


def _demo_models(settings: Settings, opts: dict[str, Any], days: int, per_day: int) -> Any:
    """Active models for the scoring-enabled outcomes that lack one; the simulator of the
    history backfilled for them (its visitors may come back live), or None."""
    # As in `train`: LightGBM's OpenMP threads must not spin (set before it is loaded).
    quiet_openmp()
    from opportune.engine.retraining import outcome_docs
    from opportune.ml.outcomes.training import (
        DAY_MS,
        DEFAULT_DAYS,
        check_readiness,
        scoring_enabled,
    )
    from opportune.store.visits import StoredVisits

    engine, rules, registry, timeout_ms = training_context(opts)
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
        _train_missing(engine, rules, registry, timeout_ms, missing, started)
        return simulator
    finally:
        engine.dispose()


def _train_missing(
    engine: Any, rules: Any, registry: Any, timeout_ms: int, missing: list[str], started: float
) -> None:
    """Train and activate the ``missing`` models, forced, unless another process trains."""
    from opportune.ml.outcomes.model import headline

    click.echo(f"training {len(missing)} outcome model(s)...")
    t = time.perf_counter()
    threads = min(2, os.cpu_count() or 1)
    with registry.training_lock() as mine:
        if not mine:
            click.echo("  another process is training models right now; not waiting")
            return
        # Forced: the rarest outcomes may fall a little short of their readiness
        # thresholds on a small simulated history, and the demo is there to show scores.
        reports = train_now(
            engine,
            rules,
            registry,
            outcomes=missing,
            timeout_ms=timeout_ms,
            force=True,
            threads=threads,
            workers=threads,
        )
    for r in reports:
        click.echo(f"  {r.outcome}: {r.message}")
        if r.card is not None:
            click.echo(f"    {headline(r.card)}")
    click.echo(
        f"  trained in {time.perf_counter() - t:.1f} s "
        f"(models ready {time.perf_counter() - started:.1f} s after start)"
    )


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
    accepted, _refused = asyncio.run(backfill(runtime, site, sessions, days * per_day))
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


def demo_agents(settings: Settings, n: int) -> None:
    """Agents present for the demo: each queue's presence, so chat is offered from the
    first visit, and the demo's agent (the one who can sign in, see ``demo_people``)
    available, the others offline — a chat is routed only to someone who can answer it.
    Once a chat arrives, queue presence follows the agents' own (``Router.sync_presence``)."""
    from sqlalchemy import delete

    from opportune.api.app import EXAMPLE_WORKSPACE
    from opportune.store.schema import agent_state, queue_presence
    from opportune.workspace import load_workspace

    ws = load_workspace(settings.workspace or EXAMPLE_WORKSPACE)
    engine = open_database(settings)
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
                    presence="available" if name == _demo_agent(ws) else "offline",
                    idle_since=now,
                    last_assigned=0,
                    updated_at=now,
                )
            )
    engine.dispose()
    who = _demo_agent(ws)
    click.echo(
        f"{n} agent(s) present on each chat queue (--agents 0 for none); "
        f"chats are routed to {who}, who answers in the agent workspace"
    )


def _demo_agent(ws: Any) -> str | None:
    """The agent the demo signs in as: ``ana``, or the workspace's first."""
    return "ana" if "ana" in ws.agents else next(iter(sorted(ws.agents)), None)


def demo_people(settings: Settings) -> list[tuple[str, str, str]]:
    """A demo agent (``ana``, or the workspace's first agent) and an admin who can sign in to
    /agent: created once, given a fresh random password every run (printed, never stored
    in clear); ``(email, role, password)`` of each."""
    from opportune.api.app import EXAMPLE_WORKSPACE
    from opportune.store import users
    from opportune.workspace import load_workspace

    ws = load_workspace(settings.workspace or EXAMPLE_WORKSPACE)
    agent = _demo_agent(ws)
    wanted = [("admin@demo.bank", "Demo admin", "admin", None)]
    if agent is not None:
        doc = ws.agents[agent]
        wanted.insert(0, (f"{agent}@demo.bank", doc.display_name or agent, "agent", agent))
    engine = open_database(settings)
    out = []
    try:
        with engine.begin() as conn:
            have = {u.email: u for u in users.list_users(conn)}
            for email, name, role, agent_id in wanted:
                password = secrets.token_urlsafe(9)
                if email in have:
                    users.set_password(conn, have[email].id, password)
                else:
                    users.create_user(
                        conn,
                        email=email,
                        name=name,
                        role=role,  # type: ignore[arg-type]
                        password=password,
                        now_ms=int(time.time() * 1000),
                        agent_id=agent_id,
                    )
                out.append((email, role, password))
    finally:
        engine.dispose()
    return out
