"""The examples in the docstrings run, and every public module has one: documentation
that cannot rot, in every package of the platform's logic."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import opportune.core
import opportune.engine
import opportune.ml
import opportune.workspace

PACKAGES = (opportune.core, opportune.ml, opportune.engine, opportune.workspace)


def _modules() -> list[str]:
    names = [p.__name__ for p in PACKAGES]
    for package in PACKAGES:
        prefix = package.__name__ + "."
        names += [m.name for m in pkgutil.walk_packages(package.__path__, prefix)]
    return sorted(names)


MODULES = _modules()


def _is_private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("."))


def _only_reexports(module: ModuleType) -> bool:
    """A package ``__init__`` that defines nothing of its own (it only re-exports names):
    its examples live with the definitions, in the submodules."""
    if not hasattr(module, "__path__"):
        return False
    return not any(
        getattr(obj, "__module__", None) == module.__name__
        for obj in vars(module).values()
        if inspect.isfunction(obj) or inspect.isclass(obj)
    )


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module)
    examples = sum(len(t.examples) for t in tests)
    if examples == 0 and not (_is_private(name) or _only_reexports(module)):
        pytest.fail(f"{name} is public and has no docstring example")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) of {name} failed"
