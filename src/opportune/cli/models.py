"""``opportune models``: outcome models in the registry, listed, activated, rolled back."""

from __future__ import annotations

from typing import Any

import click

from opportune.cli.options import data_dir_option, fail, settings_from


@click.group()
def models() -> None:
    """Outcome models in the registry: list, activate, roll back."""


def _registry(opts: dict[str, Any]) -> Any:
    from opportune.ml.outcomes.registry import ModelRegistry

    return ModelRegistry(settings_from(**opts).data_dir / "models")


def _figure(x: Any, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _version_line(card: dict[str, Any], version: str, active: str | None) -> str:
    """One saved version: when trained, on what, its test figures and its check."""
    t = card.get("test", {})
    check = card.get("activation") or {}
    return (
        f"  {'*' if version == active else ' '} {version:<5} trained {card.get('trainedAt')}  "
        f"visits {card.get('data', {}).get('visits')}  AUC {_figure(t.get('rocAuc'))}  "
        f"Brier {_figure(t.get('brier'), 4)}  ECE {_figure(t.get('ece'), 4)}  "
        f"{'passed' if check.get('notWorse', True) else 'refused'}: "
        f"{check.get('reason', '')}"
    )


@models.command("list")
@click.option("--outcome", help="Only this outcome")
@data_dir_option
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
            click.echo(_version_line(registry.card(name, v), v, active))


@models.command("activate")
@click.argument("outcome")
@click.argument("version")
@click.option("--force", is_flag=True, help="Activate even a version that failed its check")
@data_dir_option
def models_activate(outcome: str, version: str, force: bool, **opts: Any) -> None:
    """Make VERSION the active model of OUTCOME."""
    from opportune.ml.registry import ActivationRefused, RegistryError

    registry = _registry(opts)
    try:
        registry.activate(outcome, version, force=force)
    except ActivationRefused as exc:
        click.echo(f"refused: {exc} (--force)", err=True)
        raise SystemExit(1) from None
    except RegistryError as exc:
        fail(str(exc))
    click.echo(f"{outcome}: {version} is active")


@models.command("rollback")
@click.argument("outcome")
@data_dir_option
def models_rollback(outcome: str, **opts: Any) -> None:
    """Re-activate the version that was active before the current one."""
    from opportune.ml.registry import RegistryError

    registry = _registry(opts)
    try:
        version = registry.rollback(outcome)
    except RegistryError as exc:
        fail(str(exc))
    click.echo(f"{outcome}: rolled back to {version}")
