"""``opportune simulate``: simulated web traffic and a simulated contact centre."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from opportune.cli.options import common, fail, open_database, settings_from, shown


@click.group()
def simulate() -> None:
    """Simulators with ground truth: web traffic and a contact centre."""


@simulate.command("contact-center")
@common
@shown("--seed", type=int, default=1)
@shown("--days", type=click.IntRange(1, 400), default=20)
@shown(
    "--regime",
    type=click.Choice(["agents", "interactions"]),
    default="agents",
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
    from opportune.sim.center import AGENT_SURPLUS, INTERACTION_SURPLUS, Center
    from opportune.sim.center_history import workspace_yaml, write_history

    center = Center(AGENT_SURPLUS if regime == "agents" else INTERACTION_SURPLUS, seed)
    stream = center.arrivals(days=days, seed=seed)
    click.echo(f"{len(stream)} calls over {days} weekdays, {len(center.agents)} agents, {regime}")
    results = _compare_policies(center, stream, seed)
    if workspace_out is not None:
        workspace_out.mkdir(parents=True, exist_ok=True)
        (workspace_out / "contact-center.yaml").write_text(workspace_yaml(center), "utf-8")
        click.echo(f"workspace: {workspace_out / 'contact-center.yaml'}")
    if history:
        engine = open_database(settings_from(**opts))
        result = results["longest idle"]
        last = max(r.arrived_ms for r in result.records)
        n = write_history(engine, result, shift_ms=int(time.time() * 1000) - last)
        engine.dispose()
        click.echo(f"history: {n} interactions of queue 'sales' written (longest idle)")


def _compare_policies(center: Any, stream: Any, seed: int) -> dict[str, Any]:
    """Longest idle, best skill and the oracle on the same calls, a table line each."""
    from opportune.core.routing import PredictiveSettings
    from opportune.sim.contact_center import Policy, oracle_scorer
    from opportune.sim.contact_center import simulate as run

    oracle = PredictiveSettings(enabled=True, min_free_agents=1, kpi_name="sales conversion")
    policies = {
        "longest idle": Policy("longest idle", "standard", center.queue()),
        "best skill": Policy("best skill", "standard", center.queue(strategy="best_skill")),
        "oracle": Policy(
            "oracle", "assignment", center.queue(predictive=oracle), oracle_scorer(center)
        ),
    }
    results = {}
    click.echo(f"{'policy':<14}{'KPI':>8}{'ASA s':>8}{'SL 20s':>8}{'abandon':>9}")
    for name, policy in policies.items():
        results[name] = run(center, stream, policy, seed=seed)
        m = results[name].metrics()
        click.echo(
            f"{name:<14}{m['kpi']:>8.4f}{m['asa_s']:>8.1f}{m['service_level']:>8.3f}"
            f"{m['abandonment']:>9.3f}"
        )
    return results


@simulate.command("web")
@common
@shown("--seed", type=int, default=1)
@shown("--days", type=int, default=7, help="Days of history")
@shown("--visitors-per-day", type=int, default=300)
@click.option("--site-key", help="Site to simulate (default: the workspace's first site)")
@click.option(
    "--live",
    "live_url",
    help="Send live traffic to this server instead, e.g. http://127.0.0.1:8000",
)
@shown("--rate", type=float, default=2.0, help="Live: new visits per second")
@shown("--duration", type=float, default=60.0, help="Live: seconds to run")
@shown(
    "--time-scale",
    type=float,
    default=1.0,
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
        fail("--days and --visitors-per-day must be at least 1", 2)
    settings = settings_from(**opts)
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
    from opportune.sim.web import generate

    runtime = build_runtime(settings)
    sites = runtime.workspace.sites_by_key
    site = sites.get(site_key) if site_key else next(iter(sites.values()), None)
    if site is None:
        fail(f"no site with key {site_key!r} in the workspace", 2)
    start = int(time.time() * 1000) - days * 86_400_000
    sessions = generate(
        seed, start_ms=start, days=days, visitors_per_day=visitors_per_day, site_key=site.key
    )
    accepted, refused = asyncio.run(backfill(runtime, site, sessions, days * visitors_per_day))
    click.echo(
        f"backfilled {accepted} events of {days} day(s) into "
        f"{settings.resolved_database_url().split('@')[-1]}; refused {refused}"
    )


async def backfill(runtime: Any, site: Any, sessions: Any, visitors: int) -> tuple[int, int]:
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
