"""Which attribution records can be credited, as a table of cases (the pure check the
``/v1/outcome-attributions`` handler runs on each record), and the id of a record
posted without one."""

from __future__ import annotations

from typing import Any

import pytest

from opportune.api.attributions import AttributionIn, problem, record_id

KNOWN = {"kpi-1": "conversion"}
HANDLED = {"i1": "ana", "i2": "bo", "i3": None}


def rec(**kw: Any) -> AttributionIn:
    body: dict[str, Any] = {
        "outcomeId": "kpi-1",
        "customerId": "c1",
        "createdDate": 9_000,
        "touchpoints": [{"conversationId": "i1", "agentId": "ana", "date": 8_000}],
    }
    return AttributionIn.model_validate({**body, **kw})


def tp(conv: str, agent: str, share: float = 1.0) -> dict[str, Any]:
    return {"conversationId": conv, "agentId": agent, "valueShare": share, "date": 8_000}


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, None),
        ({"customerId": None, "externalContactId": "crm-7"}, None),
        ({"touchpoints": [tp("i1", "ana", 0.5), tp("i2", "bo", 0.5)]}, None),
        (
            {"outcomeId": "other"},
            "outcomeId 'other' is not the outcome id of a KPI tracked by outcome "
            "(GET /v1/kpis lists them)",
        ),
        ({"customerId": None}, "customerId or externalContactId is required"),
        (
            {"touchpoints": [tp("i1", "ana", 0.6), tp("i2", "bo", 0.5)]},
            "the touchpoints' value shares add up to more than 1",
        ),
        ({"touchpoints": [tp("i9", "ana")]}, "conversation 'i9' is not known"),
        (
            {"touchpoints": [tp("i2", "ana")]},
            "conversation 'i2' was handled by 'bo', not 'ana'",
        ),
        (
            {"touchpoints": [tp("i3", "ana")]},
            "conversation 'i3' was handled by None, not 'ana'",
        ),
        # The first failing touchpoint is the one named.
        (
            {"touchpoints": [tp("i1", "ana", 0.1), tp("i9", "x", 0.1), tp("i2", "y", 0.1)]},
            "conversation 'i9' is not known",
        ),
    ],
)
def test_which_records_can_be_credited(kw: dict[str, Any], expected: str | None) -> None:
    assert problem(rec(**kw), KNOWN, HANDLED) == expected


def test_a_record_without_an_id_is_identified_by_what_it_says() -> None:
    a = record_id(rec(touchpoints=[tp("i1", "ana"), tp("i2", "bo")]))
    b = record_id(rec(touchpoints=[tp("i2", "bo"), tp("i1", "ana")]))
    assert a == b and a.startswith("att-") and len(a) == 4 + 24
    assert record_id(rec(createdDate=9_001)) != record_id(rec())
    assert record_id(rec(customerId=None, externalContactId="c1")) != record_id(rec())
