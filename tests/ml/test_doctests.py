"""The examples in the models' docstrings run, and every public ml module has one: they are
documentation that cannot rot."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import opportune.ml

MODULES = sorted(m.name for m in pkgutil.walk_packages(opportune.ml.__path__, "opportune.ml."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no example in its docstrings"
