"""The package's layers, from the imports as written (parsed, never executed).

``core`` (pure) < ``workspace``, ``settings`` < ``ml`` < ``store`` < ``engine`` < ``api`` <
``cli``: a module imports only from its own layer or below. ``sim`` may import anything,
and nothing but ``cli`` imports ``sim`` (the simulator is a client of the platform, never a
part of it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import opportune

ROOT = Path(opportune.__file__).parent
LAYERS = {
    "core": 0,
    "workspace": 1,
    "settings": 1,
    "ml": 2,
    "store": 3,
    "engine": 4,
    "api": 5,
    "cli": 6,
}
ANYTHING = "sim"


def _package(dotted: str) -> str | None:
    """The top-level package of ``opportune.<package>...``, or None if not ours."""
    parts = dotted.split(".")
    if parts[0] != "opportune" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path, root: Path, package: str) -> list[tuple[int, str]]:
    """(line, imported opportune package) for every import in the file, type-only and
    function-level ones included."""
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    here = ("opportune", *path.relative_to(root).with_suffix("").parts)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = list(here[: len(here) - node.level])
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            target = _package(name)
            if target is not None and target != package:
                out.append((node.lineno, target))
    return out


def violations(root: Path = ROOT) -> list[str]:
    """Every import that breaks the layers, as ``file:line: a imports b`` with the rule."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        package = rel.parts[0].removesuffix(".py")
        if package not in LAYERS and package != ANYTHING:
            continue
        for line, target in _imports(path, root, package):
            where = f"src/opportune/{rel}:{line}"
            if target == ANYTHING:
                if package != "cli":
                    found.append(f"{where}: {package} imports {target} (only cli may)")
            elif package != ANYTHING and target in LAYERS and LAYERS[target] > LAYERS[package]:
                found.append(
                    f"{where}: {package} (layer {LAYERS[package]}) imports "
                    f"{target} (layer {LAYERS[target]})"
                )
    return found


def test_every_module_imports_only_its_own_layer_or_below() -> None:
    assert violations() == []


def test_a_planted_import_is_named_with_its_file_line_and_packages(tmp_path: Path) -> None:
    pkg = tmp_path / "opportune"
    (pkg / "ml").mkdir(parents=True)
    (pkg / "core").mkdir()
    (pkg / "ml" / "model.py").write_text("import os\n\nfrom opportune.engine.rules import X\n")
    (pkg / "core" / "pure.py").write_text("def f():\n    from opportune.sim import web\n")
    (pkg / "core" / "ok.py").write_text("from opportune.core.journey import Journey\n")
    assert violations(pkg) == [
        "src/opportune/core/pure.py:2: core imports sim (only cli may)",
        "src/opportune/ml/model.py:3: ml (layer 2) imports engine (layer 4)",
    ]


@pytest.mark.parametrize(
    ("package", "imported", "allowed"),
    [("store", "ml", True), ("ml", "store", False), ("sim", "cli", True), ("api", "sim", False)],
)
def test_the_rule_itself(tmp_path: Path, package: str, imported: str, allowed: bool) -> None:
    pkg = tmp_path / "opportune" / package
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text(f"from opportune.{imported} import thing\n")
    assert (violations(tmp_path / "opportune") == []) is allowed
