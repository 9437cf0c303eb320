"""The arrival profile's script finds the shared call data from the repository, wherever it is."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "derive_arrivals.py"


def _load():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("derive_arrivals", BENCH)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_default_csv_is_shared_data_beside_the_repository(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("OPPORTUNE_ARRIVALS_CSV", raising=False)
    mod = _load()
    assert mod.default_csv() == BENCH.parents[1].parent / "shared/data/bank_calls_5min.csv"
    monkeypatch.setenv("OPPORTUNE_ARRIVALS_CSV", "/elsewhere/calls.csv")
    assert mod.default_csv() == Path("/elsewhere/calls.csv")


def test_a_missing_file_is_one_clear_line_naming_it_and_the_fix(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    mod = _load()
    with pytest.raises(SystemExit) as exc:
        mod.main(["--csv", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "p.json")])
    message = str(exc.value)
    assert "nope.csv" in message and "--csv" in message and "OPPORTUNE_ARRIVALS_CSV" in message


def test_it_derives_the_profile_from_a_given_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mod = _load()
    shared = BENCH.parents[1].parent / "shared/data/bank_calls_5min.csv"
    if not shared.is_file():
        pytest.skip(f"the shared call data is not at {shared}")
    out = tmp_path / "profile.json"
    mod.main(["--csv", str(shared), "--out", str(out)])
    profile = json.loads(out.read_text())
    assert profile == json.loads(mod.OUT.read_text())  # the shipped fixture is what it derives
