"""``opportune models``: outcome models in the registry, listed, activated, rolled back."""

from __future__ import annotations

from typing import Any, NoReturn

import click

from opportune.cli.options import data_dir_option, fail, settings_from


@click.group()
def models() -> None:
    """Outcome models in the registry: list, activate, roll back."""


def _registry(opts: dict[str, Any]) -> Any:
    from opportune.ml.outcomes.registry import ModelRegistry

    return ModelRegistry(settings_from(**opts).data_dir / "models")


def _none_yet(root: Any, outcome: str | None = None) -> str:
    """No model (of ``outcome``) in the registry yet: where it looked, how to make one."""
    of = f" of {outcome}" if outcome else ""
    train = f"opportune train --outcome {outcome}" if outcome else "opportune train"
    return (
        f"no models{of} under {root} yet: `{train}` trains them on the stored visits "
        "(`opportune demo` does on simulated history); --data-dir if they are elsewhere"
    )


def _refused(registry: Any, outcome: str, exc: Exception, hint: str) -> NoReturn:
    """Exit with the registry's refusal and its fix; "none yet" when there is no version."""
    from opportune.ml.registry import RegistryError

    try:
        none = not registry.versions(outcome)
    except RegistryError:  # not a name at all: the refusal says so
        fail(str(exc))
    fail(_none_yet(registry.root, outcome) if none else f"{exc}; {hint}")


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
    from opportune.ml.registry import RegistryError

    registry = _registry(opts)
    names = [outcome] if outcome else registry.outcomes()
    try:
        if not [n for n in names if registry.versions(n)]:
            fail(_none_yet(registry.root, outcome))
    except RegistryError as exc:
        fail(str(exc))
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
        _refused(registry, outcome, exc, f"`opportune models list --outcome {outcome}` lists them")
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
        _refused(registry, outcome, exc, f"`opportune models activate {outcome} VERSION` picks one")
    click.echo(f"{outcome}: rolled back to {version}")
