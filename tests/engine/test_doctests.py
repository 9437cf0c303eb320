"""The examples in the pipeline's docstrings run (the modules of the ingest path)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "answer",
    "audience",
    "enrichment",
    "history",
    "identify",
    "ingest",
    "live",
    "placement",
    "rows",
    "rules",
    "scoring",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"opportune.engine.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
