"""The server's queue settings for predictive routing come from the queue's document: the
hold decision's figures (service-level target, handle time, arrival rate, patience)."""

from __future__ import annotations

import pytest

from opportune.engine.router import core_queue
from opportune.workspace.engagement import PredictiveDoc, QueueDoc


def test_the_hold_weighs_the_queues_own_figures() -> None:
    doc = QueueDoc(
        name="sales",
        media=["voice"],
        service_level_within="30s",
        handle_time="4m",
        arrival_rate_per_hour=180.0,
        patience="90s",
        predictive=PredictiveDoc(enabled=True, method="greedy"),
    )
    p = core_queue(doc, None).predictive
    assert p.hold_rule == "wait_cost" and p.method == "greedy"
    assert p.service_level_s == pytest.approx(30.0)
    assert p.mean_handle_s == pytest.approx(240.0)
    assert p.arrival_rate_per_s == pytest.approx(0.05)
    assert p.patience_s == pytest.approx(90.0)
    anchor = PredictiveDoc(enabled=True, method="greedy", hold_rule="anchor")
    assert core_queue(doc.model_copy(update={"predictive": anchor}), None).predictive.hold_rule == (
        "anchor"
    )
