"""The condition language, table by table: validation, predicates, durations, semantics,
and every YAML example of docs/conditions.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from opportune.core.conditions import (
    HEADS,
    MAX_DEPTH,
    ConditionError,
    Context,
    parse_condition,
    parse_duration,
    parse_predicate,
)
from opportune.core.journey import Journey, JourneyEvent
from opportune.core.outcomes import Outcome
from opportune.core.rules import Ruleset, evaluate_history
from opportune.core.segments import Segment

DOC = Path(__file__).resolve().parents[2] / "docs/conditions.md"
APPLY = "https://bank.example/demo/apply.html"
PRODUCT = "https://bank.example/demo/product.html"
HOME = "https://bank.example/demo/index.html"


def nested_not(levels: int) -> dict[str, Any]:
    cond: dict[str, Any] = {"attribute": "device", "equals": "mobile"}
    for _ in range(levels):
        cond = {"not": cond}
    return cond


# ---- a) validation ---------------------------------------------------------------------

# (condition, path, the path as printed, a part of the reason)
INVALID = [
    pytest.param(
        {"atribute": "device", "equals": "mobile"},
        ("atribute",),
        "atribute",
        "unknown condition; one of all, any, not, attribute",
        id="unknown-head",
    ),
    pytest.param(
        {"all": [{"attribute": "device", "equals": "mobile", "metric": "events", "gt": 1}]},
        ("all", 0),
        "all[0]",
        "exactly one of all, any, not, attribute, metric, returning, event, searched, "
        "sequence, sum, segment, score is needed, found attribute, metric",
        id="two-heads",
    ),
    pytest.param({}, (), "", "is needed, found none", id="no-head"),
    pytest.param(
        {"attribute": "device", "equls": "mobile"},
        ("equls",),
        "equls",
        "unknown field; here one of attribute, caseSensitive, equals",
        id="unknown-operator-on-attribute",
    ),
    pytest.param(
        {"event": {"url": {"equls": "x"}}},
        ("event", "url", "equls"),
        "event.url.equls",
        "unknown operator; one of equals, notEquals",
        id="unknown-operator-in-filter",
    ),
    pytest.param(
        {"attribute": "device", "equals": "mobile", "contains": "mob"},
        (),
        "",
        "exactly one operator is needed",
        id="two-operators",
    ),
    pytest.param(
        {"event": {"url": {"glob": "*a*", "contains": "b"}}},
        ("event", "url"),
        "event.url",
        "exactly one operator is needed",
        id="two-operators-in-filter",
    ),
    pytest.param(
        {"attribute": "device"}, (), "", "exactly one operator is needed", id="no-operator"
    ),
    pytest.param(
        {"any": [{"attribute": "devise", "equals": "mobile"}]},
        ("any", 0, "attribute"),
        "any[0].attribute",
        "unknown attribute 'devise'; one of browser, city, country",
        id="unknown-attribute",
    ),
    pytest.param(
        {"attribute": "attributes.", "exists": True},
        ("attribute",),
        "attribute",
        "unknown attribute 'attributes.'",
        id="custom-attribute-without-name",
    ),
    pytest.param(
        {"metric": "pageviews", "gt": 1},
        ("metric",),
        "metric",
        "unknown metric 'pageviews'; one of events, pageViews",
        id="unknown-metric",
    ),
    pytest.param(
        {"metric": "events", "contains": "1"},
        ("contains",),
        "contains",
        "unknown field; here one of metric, equals, gt, gte, lt, lte",
        id="text-operator-on-metric",
    ),
    pytest.param(
        {"event": {"type": "pageview"}},
        ("event", "type"),
        "event.type",
        "unknown event type 'pageview'; one of click, custom",
        id="unknown-event-type",
    ),
    pytest.param(
        {"all": [{"returning": True}, {"event": {"type": ["pageview", "click"]}}]},
        ("all", 1, "event", "type", 0),
        "all[1].event.type[0]",
        "unknown event type 'pageview'",
        id="unknown-event-type-in-list",
    ),
    pytest.param(
        {"event": {"type": "click", "kind": "x"}},
        ("event", "kind"),
        "event.kind",
        "unknown field; one of type, name, url, query, attributes",
        id="unknown-filter-field",
    ),
    pytest.param(
        {"event": {"attributes": {}}},
        ("event", "attributes"),
        "event.attributes",
        "a mapping of attribute -> test",
        id="empty-filter-attributes",
    ),
    pytest.param(
        {"attribute": "currentUrl", "regex": "(apply"},
        ("regex",),
        "regex",
        "not a valid regular expression",
        id="bad-regex",
    ),
    pytest.param(
        {"sequence": [{"type": "click"}, {"url": {"regex": "[a-"}}]},
        ("sequence", 1, "url", "regex"),
        "sequence[1].url.regex",
        "not a valid regular expression",
        id="bad-regex-in-filter",
    ),
    pytest.param(
        {"attribute": "attributes.amount", "gt": "ten"},
        ("gt",),
        "gt",
        "a number is expected, not 'ten'",
        id="gt-text",
    ),
    pytest.param(
        {"attribute": "attributes.amount", "gt": "10"},
        ("gt",),
        "gt",
        "a number is expected, not '10'",
        id="gt-quoted-number",
    ),
    pytest.param(
        {"metric": "events", "lte": True},
        ("lte",),
        "lte",
        "a number is expected, not True",
        id="lte-bool",
    ),
    pytest.param(
        {"attribute": "currentUrl", "contains": 5},
        ("contains",),
        "contains",
        "text is expected, not 5",
        id="contains-number",
    ),
    pytest.param(
        {"attribute": "device", "in": "mobile"},
        ("in",),
        "in",
        "a non-empty list is expected",
        id="in-not-a-list",
    ),
    pytest.param(
        {"attribute": "device", "in": ["mobile", ["tablet"]]},
        ("in", 1),
        "in[1]",
        "a text, number or true/false is expected",
        id="in-nested-list",
    ),
    pytest.param(
        {"attribute": "device", "equals": None},
        ("equals",),
        "equals",
        "a text, number or true/false is expected, not None",
        id="equals-null",
    ),
    pytest.param(
        {"attribute": "traits.tier", "exists": "yes"},
        ("exists",),
        "exists",
        "must be true or false",
        id="exists-not-bool",
    ),
    pytest.param({"all": []}, ("all",), "all", "a non-empty list of conditions", id="empty-all"),
    pytest.param(
        {"any": {"returning": True}},
        ("any",),
        "any",
        "a non-empty list of conditions",
        id="any-not-a-list",
    ),
    pytest.param(
        {"all": [{"returning": True}], "within": "5m"},
        ("within",),
        "within",
        "unknown field; here one of all",
        id="argument-on-all",
    ),
    pytest.param(
        {"event": {"type": "form_error"}, "atLeast": 3, "atMost": 2},
        ("atMost",),
        "atMost",
        "atMost is below atLeast: never true",
        id="atMost-below-atLeast",
    ),
    pytest.param(
        {"event": {"type": "click"}, "atLeast": 1001},
        ("atLeast",),
        "atLeast",
        "a whole number from 0 to 1000",
        id="atLeast-too-big",
    ),
    pytest.param(
        {"event": {"type": "click"}, "atLeast": True},
        ("atLeast",),
        "atLeast",
        "a whole number from 0 to 1000",
        id="atLeast-bool",
    ),
    pytest.param(
        {"event": {"type": "click"}, "atLeast": 2, "within": "5 minutes"},
        ("within",),
        "within",
        "'5 minutes' is not a duration like '30s', '5m', '2h' or '1d'",
        id="bad-within",
    ),
    pytest.param(
        {"metric": "timeOnPage", "gte": "a while"},
        ("gte",),
        "gte",
        "'a while' is not a duration",
        id="bad-duration-metric",
    ),
    pytest.param(
        {"attribute": "device", "equals": "Mobile", "caseSensitive": "yes"},
        ("caseSensitive",),
        "caseSensitive",
        "must be true or false",
        id="caseSensitive-not-bool",
    ),
    pytest.param(
        {"sequence": [{"type": "page_view"}]},
        ("sequence",),
        "sequence",
        "a list of at least two event filters is expected",
        id="sequence-one-step",
    ),
    pytest.param(
        {"sequence": [{"type": "page_view"}, "click"]},
        ("sequence", 1),
        "sequence[1]",
        "an event filter (a mapping with type, name, url...) is expected",
        id="sequence-step-not-a-filter",
    ),
    pytest.param(
        {"searched": ["travel alert", " "]},
        ("searched",),
        "searched",
        "a search term or a list of them is expected",
        id="searched-blank",
    ),
    pytest.param(
        {"sum": "value", "of": {"type": "custom"}, "gte": "lots"},
        ("gte",),
        "gte",
        "a number is expected",
        id="sum-bad-operand",
    ),
    pytest.param(
        {"sum": "", "gte": 1},
        ("sum",),
        "sum",
        "the name of a numeric event attribute is expected",
        id="sum-no-attribute",
    ),
    pytest.param(
        {"returning": "yes"}, ("returning",), "returning", "must be true or false", id="returning"
    ),
    pytest.param(
        {"segment": ""}, ("segment",), "segment", "a segment name is expected", id="segment-empty"
    ),
    pytest.param(
        nested_not(MAX_DEPTH + 1),
        ("not",) * (MAX_DEPTH + 1),
        ".".join(["not"] * (MAX_DEPTH + 1)),
        f"nested deeper than {MAX_DEPTH} levels",
        id="too-deep",
    ),
    pytest.param(
        "device == mobile",
        (),
        "",
        "a condition (a mapping with one of all, any, not",
        id="not-a-mapping",
    ),
    pytest.param(
        {"not": [{"returning": True}]},
        ("not",),
        "not",
        "a condition (a mapping with one of",
        id="not-with-a-list",
    ),
]


@pytest.mark.parametrize(("raw", "path", "where", "reason"), INVALID)
def test_invalid_conditions_name_the_path_and_the_reason(
    raw: Any, path: tuple[str | int, ...], where: str, reason: str
) -> None:
    with pytest.raises(ConditionError) as err:
        parse_condition(raw)
    assert err.value.path == path
    assert reason in err.value.message
    assert str(err.value) == (f"{where}: {err.value.message}" if where else err.value.message)


def test_the_path_starts_where_the_caller_says() -> None:
    with pytest.raises(ConditionError) as err:
        parse_condition({"all": [{"event": {"type": ["click", "tap"]}}]}, ["condition"])
    assert err.value.path == ("condition", "all", 0, "event", "type", 1)
    assert str(err.value).startswith("condition.all[0].event.type[1]: unknown event type 'tap'")


def test_the_deepest_nesting_allowed_parses() -> None:
    parse_condition(nested_not(MAX_DEPTH))


# Malformed input that once escaped as another exception type.
@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"metric": ["events"], "gt": 1}, ("metric",)),
        ({"event": {"type": {"name": "click"}}}, ("event", "type")),
    ],
)
def test_malformed_names_are_condition_errors(raw: Any, path: tuple[str | int, ...]) -> None:
    with pytest.raises(ConditionError) as err:
        parse_condition(raw)
    assert err.value.path == path


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_non_finite_duration_is_a_condition_error(value: float) -> None:
    with pytest.raises(ConditionError) as err:
        parse_condition({"event": {"type": "click"}, "within": value})
    assert err.value.path == ("within",)


def test_an_empty_list_of_event_types_is_refused() -> None:
    with pytest.raises(ConditionError) as err:
        parse_condition({"event": {"type": []}})
    assert err.value.path == ("event", "type")


def test_equals_with_a_list_is_refused_or_means_any_of() -> None:
    raw = {"attribute": "device", "equals": ["mobile", "tablet"]}
    try:
        test = parse_condition(raw).test  # type: ignore[attr-defined]
    except ConditionError as err:
        assert err.path[0] == "equals"
        return
    assert test("mobile") and test("Tablet")
    assert not test("['mobile', 'tablet']")


# ---- b) predicates ---------------------------------------------------------------------

# (predicate as written, value, holds)
PREDICATES = [
    # equals: case folded by default, exact with caseSensitive
    ({"equals": "Mobile"}, "mobile", True),
    ({"equals": "mobile"}, "MOBILE", True),
    ({"equals": "STRASSE"}, "straße", True),
    ({"equals": "Mobile", "caseSensitive": True}, "mobile", False),
    ({"equals": "Mobile", "caseSensitive": True}, "Mobile", True),
    ({"equals": "mobile"}, "mobile phone", False),
    ({"notEquals": "mobile"}, "MOBILE", False),
    ({"notEquals": "mobile", "caseSensitive": True}, "MOBILE", True),
    # numbers, also against numeric text
    ({"gt": 10}, "12", True),
    ({"gt": 10}, 12, True),
    ({"gt": 10}, 10, False),
    ({"gte": 10}, 10.0, True),
    ({"lt": 10}, "9.5", True),
    ({"lte": 10}, "ten", False),
    ({"gt": 0}, True, False),
    ({"equals": 12}, "12", True),
    ({"equals": 12}, 12.0, True),
    ({"equals": 12}, "12.0", True),
    ({"equals": "12"}, 12, True),
    ({"in": [1, 2]}, "2", True),
    # booleans only equal booleans
    ({"equals": True}, True, True),
    ({"equals": True}, 1, False),
    ({"equals": True}, "true", False),
    ({"equals": 1}, True, False),
    ({"equals": "true"}, True, False),
    ({"equals": False}, False, True),
    ({"notEquals": True}, False, True),
    # a missing value
    ({"exists": False}, None, True),
    ({"exists": True}, None, False),
    ({"exists": True}, "", True),
    ({"notEquals": "mobile"}, None, True),
    ({"notIn": ["mobile", "tablet"]}, None, True),
    ({"equals": "mobile"}, None, False),
    ({"in": ["mobile"]}, None, False),
    ({"contains": "a"}, None, False),
    ({"startsWith": "a"}, None, False),
    ({"endsWith": "a"}, None, False),
    ({"glob": "*"}, None, False),
    ({"regex": ".*"}, None, False),
    ({"lt": 10}, None, False),
    ({"gte": 0}, None, False),
    # contains / startsWith / endsWith, a list meaning any of them
    ({"contains": "ALERT"}, "travel alert", True),
    ({"contains": "ALERT", "caseSensitive": True}, "travel alert", False),
    ({"contains": ["loan", "alert"]}, "Travel Alert", True),
    ({"contains": ["loan", "card"]}, "Travel Alert", False),
    ({"startsWith": ["https://bank", "https://shop"]}, "https://shop.example/", True),
    ({"startsWith": "apply"}, "/demo/apply.html", False),
    ({"endsWith": [".pdf", ".HTML"]}, "/demo/apply.html", True),
    ({"endsWith": ".HTML", "caseSensitive": True}, "/demo/apply.html", False),
    # glob: the whole value
    ({"glob": "*/apply*"}, "https://bank.example/apply?step=2", True),
    ({"glob": "*/apply*"}, "https://bank.example/APPLY", True),
    ({"glob": "*/apply*", "caseSensitive": True}, "https://bank.example/APPLY", False),
    ({"glob": "/apply*"}, "https://bank.example/apply", False),
    ({"glob": "https://bank.example/?emo*"}, "https://bank.example/demo/x", True),
    ({"glob": ["*/help*", "*/search*"]}, "https://b/search.html?q=x", True),
    # regex: searched anywhere, ignoring case unless told
    ({"regex": "apply"}, "https://bank.example/demo/apply.html", True),
    ({"regex": "APPLY"}, "https://bank.example/demo/apply.html", True),
    ({"regex": "APPLY", "caseSensitive": True}, "https://bank.example/demo/apply.html", False),
    ({"regex": "^apply"}, "https://bank.example/demo/apply.html", False),
    ({"regex": r"step=\d$"}, "https://b/apply.html?step=3", True),
    ({"regex": ["^x", "loan"]}, "Loan rates", True),
    # in / notIn
    ({"in": ["cpc", "ppc", "paid"]}, "CPC", True),
    ({"in": ["cpc", "ppc", "paid"]}, "email", False),
    ({"in": ["cpc"], "caseSensitive": True}, "CPC", False),
    ({"notIn": ["cpc", "ppc"]}, "email", True),
    ({"notIn": ["cpc", "ppc"]}, "PPC", False),
    ({"in": [True, "yes"]}, True, True),
    ({"in": [True, "yes"]}, "true", False),
]


@pytest.mark.parametrize(("spec", "value", "holds"), PREDICATES)
def test_predicates(spec: dict[str, Any], value: Any, holds: bool) -> None:
    assert parse_predicate(spec, [])(value) is holds


@pytest.mark.parametrize(
    ("field", "bare", "value", "holds"),
    [
        ("url", "*/demo/apply.html*", f"{APPLY}?step=2", True),  # glob, whole URL
        ("url", "/demo/apply.html", f"{APPLY}?step=2", False),
        ("query", "Travel Alert", "set a travel alert for Spain", True),  # contains
        ("name", "LOAN_SUBMITTED", "loan_submitted", True),  # equals
        ("name", "loan", "loan_submitted", False),
    ],
)
def test_bare_values_in_event_filters(field: str, bare: str, value: str, holds: bool) -> None:
    cond = parse_condition({"event": {field: bare}})
    ev = JourneyEvent("custom", 0, **{field: value})
    assert cond.filter(ev) is holds  # type: ignore[attr-defined]


# ---- c) durations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("30s", 30_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        (45, 45_000),
        (1.5, 1_500),
        ("1.5m", 90_000),
        ("90", 90_000),
        (" 10 m ", 600_000),
        (0, 0),
    ],
)
def test_durations(text: Any, ms: int) -> None:
    assert parse_duration(text, ["within"]) == ms


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-5, "a duration cannot be negative"),
        ("-5s", "'-5s' is not a duration"),
        ("soon", "'soon' is not a duration like '30s', '5m', '2h' or '1d'"),
        ("1h30m", "is not a duration"),
        ("5M", "is not a duration"),
        ("", "is not a duration"),
        (None, "None is not a duration"),
        (True, "a duration like '30s', '5m', '2h' or '1d' is expected"),
        (False, "a duration like"),
    ],
)
def test_durations_refused(value: Any, reason: str) -> None:
    with pytest.raises(ConditionError) as err:
        parse_duration(value, ["all", 0, "within"])
    assert err.value.path == ("all", 0, "within")
    assert reason in err.value.message


# ---- d) semantics, end to end ----------------------------------------------------------


def run(
    condition: dict[str, Any],
    events: list[JourneyEvent],
    *,
    visit: int = 1,
    facts: dict[str, Any] | None = None,
) -> list[bool]:
    """Whether the condition holds after each event, live; checked against from scratch."""
    rs = Ruleset([Segment("s", parse_condition(condition))])
    j = Journey(
        session_id="v", started_at=events[0].ts, facts=dict(facts or {}), visit_number=visit
    )
    assignments: dict[str, list[int]] = {}
    live = []
    for ev in events:
        changes = rs.step(j, ev, max(j.last_at, ev.ts), assignments)
        assert not changes.errors
        live.append("s" in j.segments)
    ctx = Context(facts=facts or {}, visit_number=visit, started_at=events[0].ts)
    scratch = [evaluate_history(rs, events[:n], ctx).segments["s"] for n in range(1, len(events))]
    assert live[:-1] == scratch
    assert live[-1] == evaluate_history(rs, events, ctx).segments["s"]
    return live


def page(ts: int, url: str) -> JourneyEvent:
    return JourneyEvent("page_view", ts, url=url)


def search(ts: int, query: str) -> JourneyEvent:
    return JourneyEvent("search", ts, url="https://bank.example/demo/search.html", query=query)


def custom(ts: int, name: str, **attributes: Any) -> JourneyEvent:
    return JourneyEvent("custom", ts, url=HOME, name=name, attributes=attributes)


def click(ts: int) -> JourneyEvent:
    return JourneyEvent("click", ts, url=HOME)


@pytest.mark.parametrize(
    ("condition", "events", "expected"),
    [
        pytest.param(
            {"searched": "device activation"},
            [search(0, "device"), search(1, "How do I do DEVICE Activation?")],
            [False, True],
            id="searched-contains-ignoring-case",
        ),
        pytest.param(
            {"searched": ["device activation", "travel alert"]},
            [search(0, "loan rates"), search(1, "Travel Alert Spain")],
            [False, True],
            id="searched-any-of",
        ),
        pytest.param(
            {"searched": "loan", "atLeast": 2},
            [search(0, "loan"), page(1, HOME), search(2, "LOAN rates")],
            [False, False, True],
            id="searched-at-least",
        ),
        pytest.param(
            {"sequence": [{"url": "*/product.html*"}, {"url": "*/apply.html*"}], "within": "1m"},
            [page(0, PRODUCT), page(90_000, APPLY)],
            [False, False],
            id="sequence-too-slow",
        ),
        pytest.param(
            {"sequence": [{"url": "*/product.html*"}, {"url": "*/apply.html*"}], "within": "1m"},
            [page(0, PRODUCT), page(30_000, PRODUCT), page(90_000, APPLY), click(600_000)],
            [False, False, True, True],
            id="sequence-latest-start-counts-and-sticks",
        ),
        pytest.param(
            {"sequence": [{"url": "*/product.html*"}, {"url": "*/apply.html*"}], "within": "1m"},
            [page(0, PRODUCT), page(60_000, APPLY)],
            [False, True],
            id="sequence-within-inclusive",
        ),
        pytest.param(
            {"sequence": [{"url": "*/product.html*"}, {"url": "*/apply.html*"}]},
            [page(0, APPLY), page(10, PRODUCT)],
            [False, False],
            id="sequence-in-order",
        ),
        pytest.param(
            {"sequence": [{"url": "*/product.html*"}, {"url": "*/apply.html*"}]},
            [page(10, APPLY), page(0, PRODUCT)],
            [False, False],
            id="sequence-in-processing-order-not-time",
        ),
        pytest.param(
            {"sequence": [{"type": "page_view"}, {"type": "page_view"}]},
            [page(0, HOME), click(1), page(2, APPLY)],
            [False, False, True],
            id="sequence-distinct-events",
        ),
        pytest.param(
            {"sum": "value", "of": {"type": "custom", "name": "cart_add"}, "gte": 35},
            [
                custom(0, "cart_add", value=20),
                custom(1, "cart_add", value="n/a"),
                custom(2, "cart_add", value=True),
                custom(3, "cart_add"),
                custom(4, "purchase", value=100),
                custom(5, "cart_add", value="15"),
            ],
            [False, False, False, False, False, True],
            id="sum-skips-non-numbers-and-other-events",
        ),
        pytest.param(
            {"sum": "value", "of": {"type": "custom", "name": "cart_add"}, "lt": 30},
            [click(0), custom(1, "cart_add", value=12.5), custom(2, "cart_add", value=20)],
            [True, True, False],
            id="sum-starts-at-zero",
        ),
        pytest.param(
            {"metric": "timeOnPage", "gte": "30s"},
            [page(0, HOME), click(40_000), page(50_000, APPLY), click(70_000), click(80_000)],
            [False, True, False, False, True],
            id="timeOnPage-resets-on-page-view",
        ),
        pytest.param(
            {"metric": "timeOnPage", "lt": "1h"},
            [click(0), page(1, HOME)],
            [False, True],
            id="timeOnPage-false-before-a-page",
        ),
        pytest.param(
            {"metric": "timeOnSite", "gte": 60},
            [click(0), page(59_999, HOME), click(60_000)],
            [False, False, True],
            id="timeOnSite-number-is-seconds",
        ),
        pytest.param(
            {"event": {"type": "form_error", "url": "*/apply.html*"}, "atLeast": 2, "within": "5m"},
            [
                JourneyEvent("form_error", 0, url=APPLY, name="loan"),
                JourneyEvent("form_error", 1, url=HOME, name="contact"),
                JourneyEvent("form_error", 300_000, url=f"{APPLY}?step=2", name="loan"),
                click(300_001),
            ],
            [False, False, True, False],
            id="window-start-and-now-included",
        ),
        pytest.param(
            {"event": {"type": "custom", "name": "purchase"}, "atMost": 0},
            [click(0), custom(1, "Purchase")],
            [True, False],
            id="atMost-0-never-happened",
        ),
        pytest.param(
            {"attribute": "currentUrl", "glob": "*/apply.html*"},
            [page(0, HOME), page(1, APPLY), click(2), page(3, HOME)],
            [False, True, True, False],
            id="currentUrl-follows-pages",
        ),
        pytest.param(
            {"attribute": "attributes.step", "gte": 2},
            [custom(0, "x", step=1), custom(1, "x", step="3"), custom(2, "x", other=1)],
            [False, True, True],
            id="custom-attribute-last-value",
        ),
    ],
)
def test_semantics(
    condition: dict[str, Any], events: list[JourneyEvent], expected: list[bool]
) -> None:
    assert run(condition, events) == expected


@pytest.mark.parametrize(
    ("returning", "visit", "holds"),
    [(True, 1, False), (True, 2, True), (True, 7, True), (False, 1, True), (False, 2, False)],
)
def test_returning_depends_on_the_visit_number(returning: bool, visit: int, holds: bool) -> None:
    assert run({"returning": returning}, [page(0, HOME)], visit=visit) == [holds]


def test_session_attributes_come_from_the_visit() -> None:
    facts = {"device": "mobile", "utmMedium": "CPC"}
    cond = {
        "all": [
            {"attribute": "device", "equals": "Mobile"},
            {"attribute": "utmMedium", "in": ["cpc", "ppc", "paid"]},
            {"attribute": "utmCampaign", "exists": False},
        ]
    }
    assert run(cond, [page(0, HOME)], facts=facts) == [True]
    assert run(cond, [page(0, HOME)], facts={"device": "desktop"}) == [False]


def test_a_nan_text_does_not_poison_a_sum() -> None:
    events = [custom(0, "cart_add", value=50), custom(1, "cart_add", value="NaN")]
    cond = {"sum": "value", "of": {"name": "cart_add"}, "gte": 30}
    assert run(cond, events) == [True, True]


# ---- the documentation's examples ------------------------------------------------------


def doc_conditions() -> list[tuple[str, dict[str, Any]]]:
    """(label, document) for every YAML document of the doc with a condition (or that is one)."""
    out = []
    blocks = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S)
    for b, block in enumerate(blocks):
        for d, doc in enumerate(yaml.safe_load_all(block)):
            if isinstance(doc, dict) and ("condition" in doc or any(h in doc for h in HEADS)):
                out.append((f"block{b}.doc{d}", doc))
    return out


def test_the_doc_has_examples() -> None:
    docs = doc_conditions()
    assert len(docs) >= 8
    assert {d.get("kind") for _, d in docs} >= {"segment", "outcome"}


@pytest.mark.parametrize(
    "doc", [pytest.param(doc, id=f"{at}-{doc.get('name', '')}") for at, doc in doc_conditions()]
)
def test_every_doc_example_parses(doc: dict[str, Any]) -> None:
    if "condition" in doc:
        parse_condition(doc["condition"], ["condition"])
    else:
        parse_condition(doc)


def test_the_doc_examples_work_together() -> None:
    """The segments and outcomes of the doc form one valid ruleset (references resolve)."""
    segments, outcomes = [], []
    for _, doc in doc_conditions():
        if doc.get("kind") == "segment":
            segments.append(Segment(doc["name"], parse_condition(doc["condition"])))
        elif doc.get("kind") == "outcome":
            cond = parse_condition(doc["condition"])
            outcomes.append(Outcome(doc["name"], cond, doc.get("valueFrom")))
    rs = Ruleset(segments, outcomes)
    assert len(rs) == len(segments) + len(outcomes)
