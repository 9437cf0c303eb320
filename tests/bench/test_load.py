"""``bench/load.py``'s bookkeeping: one small step against one process on PostgreSQL +
Redis, every event sent answered and stored once, and what it prints computed from the
answers. Nothing here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> ModuleType:
    if "bench_load" in sys.modules:
        return sys.modules["bench_load"]
    spec = importlib.util.spec_from_file_location("bench_load", BENCH / "load.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_search_doubles_then_bisects_and_halves_when_the_first_step_fails() -> None:
    mod = _load()
    tried: list[float] = []

    def under(limit: float):  # type: ignore[no-untyped-def]
        async def measure(rate: float) -> bool:
            tried.append(rate)
            return rate <= limit

        return measure

    asyncio.run(mod.search(under(730), mod.Options(start_rate=100, max_rate=6400, bisect=2)))
    assert tried == [100, 200, 400, 800, 600, 700]
    tried.clear()
    asyncio.run(mod.search(under(30), mod.Options(start_rate=100, bisect=1)))
    assert tried == [100, 50, 25, 38]
    tried.clear()
    asyncio.run(mod.search(under(10**6), mod.Options(start_rate=100, max_rate=300, bisect=2)))
    assert tried == [100, 200, 300]


def test_amdahl_fits_the_two_points_and_predicts_sixteen() -> None:
    mod = _load()
    assert mod.amdahl(2.0, 16) == (1.0, 16.0)
    assert mod.amdahl(1.0, 16) == (0.0, 1.0)
    p, s16 = mod.amdahl(1.6, 16)
    assert p == pytest.approx(0.75)
    assert s16 == pytest.approx(1 / (0.25 + 0.75 / 16))


@pytest.mark.postgres
@pytest.mark.redis
def test_one_small_step_answers_and_stores_every_event_it_sent(capsys) -> None:  # type: ignore[no-untyped-def]
    mod = _load()
    opts = mod.Options(
        seconds=3,
        start_rate=40,
        max_rate=40,
        bisect=0,
        halvings=0,
        retries=0,
        chats_per_second=0.5,
        chat_seconds=2,
        every=1,
        agents=1,
        warmup=1,
        settle=0.2,
    )
    out = mod.configuration(1, opts, use_uvloop=False)
    assert len(out.steps) == 1
    step = out.steps[0]
    for s in (out.warm, step):
        assert s.batches_sent > 0
        assert sum(s.answers.values()) == s.batches_sent == len(s.latencies) == len(s.lags)
        assert s.answers[200] == s.batches_sent, s.answers  # every batch answered 200
        # every event accounted for by its answer: all ids are new, so all accepted
        assert s.answered_events == s.events_sent == s.accepted
        assert s.duplicates == s.refused == 0
        assert s.events_s == s.answered_events / s.seconds
    # the database holds exactly what the answers said they accepted, once each
    assert out.stored == out.accepted == out.warm.events_sent + step.events_sent
    # every offer shown was reported shown, then closed one way or another
    everything = [out.warm, step]
    shown = sum(sum(s.offers.values()) for s in everything)
    reports = sum((s.reports for s in everything), start=mod.Counter())
    assert reports["offered"] == shown
    assert reports["accepted"] + reports["rejected"] + reports["abandoned"] == shown
    assert reports["started"] == sum(s.offers["bot"] for s in everything)
    assert sum(s.report_errors for s in everything) == 0
    assert out.chat_failed == 0, out.chat_errors

    printed = capsys.readouterr().out
    assert f"answered {step.events_s:6.0f} ev/s ({step.batches_sent} batches)" in printed
    assert f"p99 {mod.pct(step.latencies, 0.99):7.1f}" in printed
    mod.report([out], opts)
    summary = capsys.readouterr().out
    total = out.warm.events_sent + step.events_sent
    assert f"{total} events sent, {total} answered ({total} accepted" in summary
    assert f"{out.stored} stored in the database" in summary
    if step.held:
        assert f"held {step.events_s:.0f} events/s (offered {step.rate:.0f})" in summary
    else:
        assert "no step held" in summary


def test_the_cpu_fit_is_the_least_squares_line_through_the_steps() -> None:
    mod = _load()
    steps = [
        mod.Step(r, 10, server_cpu_s=10 * (0.1 + r * 0.001), accepted=r * 10)
        for r in (100, 200, 400)
    ]
    fixed, per_event = mod.cpu_fit(steps)
    assert fixed == pytest.approx(0.1)
    assert per_event == pytest.approx(0.001)
    assert mod.cpu_fit(steps[:1]) is None  # one rate: no line
