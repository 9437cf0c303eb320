"""Why in words (issue 19 #8): every feature of the outcome models, on real journeys (the
web simulator's visits replayed through the example workspace's rules, as training does),
is said without the model's own names, and a word bucket is said with the visit's words."""

from __future__ import annotations

import re
from itertools import islice

import pytest

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.core.journey import Journey, JourneyEvent, fold
from opportune.engine.rules import RuleBook
from opportune.ml.outcomes.features import spec_for, vector
from opportune.ml.outcomes.reasons import VisitText, reason, reasons, texts_of, word_feature
from opportune.sim.web import generate
from opportune.sim.web_history import SimHistory
from opportune.workspace import load_workspace

T0 = 1_760_000_000_000
SITE = "https://bank.example/demo"
# What a person must never be shown: the models' own feature names.
INTERNAL = re.compile(
    r"word:\d|group:|past:|segment:|page:|landing:|local_hour|_s\b|visit_number|"
    r"days_since|device_|browser_|os_|referrer_|campaign_|page_views|form_errors"
)


def _journey(*events: JourneyEvent, **kw: object) -> Journey:
    j = Journey("s", T0, **kw)  # type: ignore[arg-type]
    for e in events:
        fold(j, e)
    return j


def test_every_feature_of_real_journeys_is_said_in_words() -> None:
    rules = RuleBook(load_workspace(EXAMPLE_WORKSPACE))
    rs = rules.ruleset
    spec = spec_for(rs)
    history = SimHistory()
    sessions = generate(11, start_ms=T0, days=1, visitors_per_day=300)
    said_words = 0
    for visit in islice(history.visits(sessions), 300):
        j = visit.journey(rs.fingerprint)
        assignments = {k: list(v) for k, v in visit.assignments.items()}
        for e in visit.events:
            rs.step(j, e, e.ts, assignments)
        members = rs.members(j, assignments, j.last_at)
        x = vector(j, members, j.last_at, spec)
        texts = texts_of(visit.events)
        here = rs.pages.of(j.url)
        for name, value in zip(spec.names, x, strict=True):
            text = reason(name, value, j, texts=texts, events=visit.events, page_groups=here)
            assert text and not INTERNAL.search(text), (name, value, text)
            if name.startswith("word:") and value > 0 and texts:
                assert "'" in text, (name, text)  # the visit's own words are quoted
                said_words += 1
    assert said_words > 50


def test_the_words_of_a_bucket_come_back_from_the_visit() -> None:
    events = (
        JourneyEvent("page_view", T0, url=f"{SITE}/search.html?q=mortgage+rates"),
        JourneyEvent("search", T0 + 1000, query="Mortgage for a first home"),
        JourneyEvent("click", T0 + 2000, name="Mortgage calculator"),
    )
    j = _journey(*events)
    texts = texts_of(events)
    bucket = word_feature("mortgage")
    assert reason(bucket, 3.0, j, texts=texts) == (
        "searched for 'Mortgage for a first home'; clicked on 'Mortgage calculator'; "
        "opened a page about 'mortgage rates'"
    )
    # Absent: said as absent, never as "word:NN".
    assert "word:" not in reason(bucket, 0.0, j, texts=texts)
    assert "search" in reason(bucket, 2.0, j)  # no texts handed in: still words


@pytest.mark.parametrize(
    ("feature", "value", "facts", "want"),
    [
        ("visit_number", 3.0, {}, "3rd visit"),
        ("days_since_last_visit", 2.4, {}, "last visit 2 days ago"),
        (
            "campaign",
            1.0,
            {"utmSource": "google", "utmCampaign": "spring"},
            "came from a Google campaign 'spring'",
        ),
        (
            "campaign_paid",
            1.0,
            {"utmSource": "bing", "utmCampaign": "loans"},
            "came from a paid Bing ad 'loans'",
        ),
        (
            "referrer_search",
            1.0,
            {"referrerDomain": "www.google.com"},
            "came from a search engine (www.google.com)",
        ),
        ("local_hour", 14.0, {}, "visiting at 14:00 local time"),
        ("weekday", 1.0, {}, "visiting on a Tuesday"),
        ("device_mobile", 1.0, {}, "on a mobile"),
        ("os_ios", 1.0, {}, "on iOS"),
        ("group:loan-form", 3.0, {}, "viewed 3 loan form pages"),
        ("past:loan_submitted", 1.0, {}, "reached loan submitted in 1 earlier visit"),
        ("segment:loan-shoppers", 1.0, {}, "in the segment loan shoppers"),
        ("identified", 0.0, {}, "not signed in"),
        ("time_on_site_s", 250.0, {}, "on the site for 4 min"),
    ],
)
def test_features_said_as_a_person_would(
    feature: str, value: float, facts: dict[str, str], want: str
) -> None:
    assert reason(feature, value, Journey("s", T0, facts=facts)) == want  # type: ignore[arg-type]


def test_forms_and_the_page_are_named() -> None:
    events = (
        JourneyEvent("page_view", T0, url=f"{SITE}/apply.html"),
        JourneyEvent("form_error", T0 + 1000, name="loan"),
        JourneyEvent("form_error", T0 + 2000, name="loan"),
    )
    j = _journey(*events)
    assert reason("form_errors", 2.0, j, events=events) == "2 errors on the loan form"
    assert reason("dwell_s", 125.0, j, page_groups=("pricing",)) == (
        "on the pricing page for 2 min"
    )
    assert reason("dwell_s", 30.0, j) == "on the page '/demo/apply.html' for 30 s"


def test_reasons_keep_the_public_fields_and_add_text() -> None:
    why = [{"feature": "searches", "value": 2.0, "contribution": 0.3}]
    [out] = reasons(why, Journey("s", T0))
    assert out == {
        "feature": "searches",
        "value": 2.0,
        "contribution": 0.3,
        "text": "searched 2 times",
    }


def test_a_hostile_query_is_quoted_as_it_came() -> None:
    hostile = "<img src=x onerror=alert(1)> loan"
    events = (JourneyEvent("search", T0, query=hostile),)
    j = _journey(*events)
    text = reason(word_feature("loan"), 1.0, j, texts=[VisitText("search", hostile)])
    assert text == f"searched for '{hostile}'"  # data: the page renders it with textContent
