"""An outcome's model card in the console: the active version, its test figures (ROC AUC,
PR AUC, Brier, calibration error and plot), the logistic-regression and base-rate baselines,
the activation check, the readiness of the history, and a retrain button.

The figures are the registry's cards (``ml/outcomes/registry.py``), written by ``opportune
train``; the button runs that same command now in a child process
(``engine/retraining.train_now``: readiness, activation rule and registry lock included),
so the console never trains in the server's own process.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from jinja2 import Environment
from starlette.responses import RedirectResponse, Response

from opportune.api.console import Admin, Reader, runtime
from opportune.core.kpis import DAY_MS
from opportune.engine.retraining import outcome_docs, train_now
from opportune.ml.calibration import reliability_svg
from opportune.ml.outcomes.registry import ModelRegistry
from opportune.ml.outcomes.training import DEFAULT_DAYS, check_readiness
from opportune.ml.registry import RegistryError
from opportune.store.visits import StoredVisits


def _registry(request: Request) -> ModelRegistry:
    return ModelRegistry(runtime(request).settings.data_dir / "models")


def _trainings(request: Request) -> dict[str, dict[str, Any]]:
    """The retrain button's runs in this process, by outcome (state, when, output)."""
    state = request.app.state
    if not hasattr(state, "console_trainings"):
        state.console_trainings = {}
    found: dict[str, dict[str, Any]] = state.console_trainings
    return found


def _running(request: Request) -> set[asyncio.Task[None]]:
    state = request.app.state
    if not hasattr(state, "console_training_tasks"):
        state.console_training_tasks = set()
    found: set[asyncio.Task[None]] = state.console_training_tasks
    return found


def _figures(card: dict[str, Any]) -> dict[str, Any]:
    t = card.get("test", {})
    base = card.get("baselines", {})
    lr, rate = base.get("logisticRegression") or {}, base.get("baseRate") or {}
    check = card.get("activation") or {}
    return {
        "version": card.get("version"),
        "trainedAt": card.get("trainedAt"),
        "data": card.get("data", {}),
        "rocAuc": t.get("rocAuc"),
        "prAuc": t.get("prAuc"),
        "brier": t.get("brier"),
        "ece": t.get("ece"),
        "calibration": (card.get("calibration") or {}).get("method"),
        "reliability": t.get("reliability", []),
        "baselineAuc": lr.get("rocAuc"),
        "baselineBrier": lr.get("brier"),
        "baseRateBrier": rate.get("brier"),
        "baseRate": rate.get("rate"),
        "notWorse": check.get("notWorse", True),
        "check": check.get("reason", ""),
        "topFeatures": card.get("topFeatures", [])[:8],
    }


def model_summary(request: Request, name: str) -> dict[str, Any]:
    """What the outcome's page shows of its model (blocking: run in a thread)."""
    rt = runtime(request)
    registry = _registry(request)
    try:
        versions = registry.versions(name)
        active = registry.active_version(name)
    except RegistryError as exc:
        return {"error": str(exc)}
    shown = active or (versions[-1] if versions else None)
    now = int(time.time() * 1000)
    ready = check_readiness(
        StoredVisits(rt.ingestor.engine),
        outcome_docs(rt.rules),
        registry,
        [name],
        since_ms=now - DEFAULT_DAYS * DAY_MS,
        until_ms=now - rt.settings.session_timeout_s * 1000,
    )[name]
    return {
        "active": active,
        "versions": [_figures(registry.card(name, v)) for v in reversed(versions)],
        "card": _figures(registry.card(name, shown)) if shown else None,
        "readiness": {
            "status": ready.status,
            "ready": ready.ready,
            "enabled": ready.enabled,
            "sessions": ready.sessions,
            "minSessions": ready.min_sessions,
            "achievements": ready.achievements,
            "minAchievements": ready.min_achievements,
        },
        "days": DEFAULT_DAYS,
        "training": _trainings(request).get(name),
    }


async def _retrain(request: Request, name: str) -> None:
    rt = runtime(request)
    runs = _trainings(request)
    runs[name] = {"state": "running", "startedAt": int(time.time() * 1000), "output": ""}
    try:
        code, output = await train_now(rt.settings, [name], DEFAULT_DAYS)
    except Exception as exc:  # the child could not start: say so on the page
        code, output = -1, f"could not start opportune train: {exc}"
    runs[name] = {**runs[name], "state": "done" if code == 0 else "failed", "output": output}
    if code == 0:
        await asyncio.to_thread(rt.ingestor.scorer.refresh)


def console_models_router(e: Environment) -> APIRouter:
    api = APIRouter(prefix="/console/outcomes", include_in_schema=False)

    @api.get("/{name}/reliability.svg")
    async def reliability(request: Request, name: str, person: Reader) -> Response:
        """The shown version's reliability diagram, drawn from its card."""
        summary = await asyncio.to_thread(model_summary, request, name)
        card = summary.get("card")
        if card is None:
            raise HTTPException(404, detail={"code": "not_found", "message": "no model yet"})
        svg = reliability_svg(card["reliability"], f"{name} {card['version']}: reliability")
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    @api.post("/{name}/retrain")
    async def retrain(request: Request, name: str, person: Admin) -> Response:
        """Start ``opportune train`` for this outcome; the page shows how it went."""
        if runtime(request).rules.get("outcome", name) is None:
            raise HTTPException(404, detail={"message": f"no outcome {name!r}"})
        run = _trainings(request).get(name)
        if run is None or run["state"] != "running":
            # Held until done: the loop keeps only weak references to its tasks.
            task = asyncio.get_running_loop().create_task(_retrain(request, name))
            running = _running(request)
            running.add(task)
            task.add_done_callback(running.discard)
        return RedirectResponse(f"/console/outcomes/{name}#model", status_code=303)

    return api
