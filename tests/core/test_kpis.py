"""KPIs: definitions and their validation, labels, outcome credit, readiness."""

from __future__ import annotations

import pytest

from opportune.core.kpis import (
    DAY_MS,
    KPI,
    HistoryStats,
    OutcomeAttribution,
    ReadinessThresholds,
    Touchpoint,
    credit,
    history_stats,
    label,
    readiness,
)

SALES = KPI("sales", "sales_conversion", success_codes=frozenset({"sale", "upsell"}))
CHURN = KPI("churn", "churn", success_codes=frozenset({"cancelled"}))
VALUE = KPI("value", "sales_value", tracking="outcome")
AHT = KPI("aht", "handle_time", tracking="measured")
RETAINED = KPI("retained", "retention", tracking="outcome")


@pytest.mark.parametrize(
    ("kpi", "binary", "direction"),
    [
        (SALES, True, "maximize"),
        (CHURN, True, "minimize"),
        (VALUE, False, "maximize"),
        (AHT, False, "minimize"),
        (RETAINED, True, "maximize"),
        (KPI("fcr", "first_contact_resolution", success_codes=frozenset({"ok"})), True, "maximize"),
    ],
)
def test_kpi_kind_and_direction(kpi: KPI, binary: bool, direction: str) -> None:
    assert kpi.binary is binary
    assert kpi.direction == direction


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"type": "sales_conversion"}, "needs success_codes"),
        ({"type": "handle_time"}, "handle_time is measured"),
        ({"type": "retention", "tracking": "measured"}, "only handle_time is measured"),
        ({"type": "sales_value", "success_codes": frozenset({"x"})}, "needs tracking: outcome"),
        ({"type": "nps", "tracking": "outcome"}, "unknown type"),
        ({"type": "churn", "tracking": "survey"}, "unknown tracking"),
    ],
)
def test_invalid_kpis_name_what_is_wrong(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KPI("k", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kpi", "kw", "expected"),
    [
        (SALES, {"wrap_up_code": "sale"}, 1.0),
        (SALES, {"wrap_up_code": "upsell"}, 1.0),
        (SALES, {"wrap_up_code": "no_sale"}, 0.0),
        (SALES, {}, None),  # not wrapped up yet
        (CHURN, {"wrap_up_code": "cancelled"}, 1.0),
        (VALUE, {"attributed_value": 250.0}, 250.0),
        (VALUE, {}, 0.0),
        (RETAINED, {"attributed_value": 0.0}, 1.0),  # an outcome credited, even of no value
        (RETAINED, {}, 0.0),
        (AHT, {"handle_time_s": 312.5, "wrap_up_code": "sale"}, 312.5),
        (AHT, {}, None),
    ],
)
def test_label(kpi: KPI, kw: dict[str, object], expected: float | None) -> None:
    assert label(kpi, **kw) == expected  # type: ignore[arg-type]


def test_credit_splits_values_by_share_within_the_window() -> None:
    t0 = 10 * DAY_MS
    outcomes = [
        OutcomeAttribution(
            "o1",
            "c1",
            100.0,
            t0,
            (
                Touchpoint("conv-a", "a1", "chat", 0.6, t0 - DAY_MS),
                Touchpoint("conv-b", "a2", "voice", 0.4, t0 - 2 * DAY_MS),
            ),
        ),
        OutcomeAttribution("o2", "c1", 50.0, t0, (Touchpoint("conv-a", "a1", "chat", 1.0, t0),)),
        OutcomeAttribution("o3", "c2", 80.0, t0, (Touchpoint("old", "a3", "chat", 1.0, 0),)),
        OutcomeAttribution("o4", "c3", 80.0, t0, (Touchpoint("later", "a3", "chat", 1.0, t0 + 1),)),
    ]
    got = credit(outcomes, window_days=7)
    assert got == pytest.approx({"conv-a": 110.0, "conv-b": 40.0})


def test_readiness_says_what_is_missing() -> None:
    t = ReadinessThresholds(
        history_days=90, interactions=1000, successes=100, agents_with_history=5
    )
    ok = readiness(SALES, HistoryStats(91, 5000, 400, 12), t)
    assert ok.ready and ok.missing == ()
    short = readiness(SALES, HistoryStats(30, 800, 40, 3), t)
    assert not short.ready
    assert short.missing == (
        "90 days of history needed, 30.0 held",
        "1000 interactions needed, 800 held",
        "100 successes needed, 40 held",
        "5 agents with ≥30 interactions needed, 3 held",
    )
    almost_all = readiness(SALES, HistoryStats(120, 2000, 1950, 9), t)
    assert almost_all.missing == ("100 failures needed, 50 held",)
    # Amounts have no successes to count; the days threshold is configurable.
    assert readiness(AHT, HistoryStats(14, 5000, 0, 9), ReadinessThresholds(history_days=14)).ready
    assert not readiness(AHT, HistoryStats(14, 5000, 0, 9)).ready  # 90 by default


def test_history_stats_counts_agents_with_enough_history() -> None:
    rows = [(k * DAY_MS // 10, f"a{k % 3}", float(k % 4 == 0)) for k in range(100)]
    rows += [(0, "rare", 1.0)]
    stats = history_stats(rows, ReadinessThresholds(agent_min_interactions=30))
    assert stats == HistoryStats(days=9.9, interactions=101, successes=26, agents_with_history=3)
    assert history_stats([], ReadinessThresholds()) == HistoryStats(0.0, 0, 0, 0)
