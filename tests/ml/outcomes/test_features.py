"""The feature layouts: what layout 2 adds (current and landing page group, the visit's
words), that a model saved with layout 1 is still served its own vector, and that the
server's retraining loop stays quiet while a server (or a test client) has just started."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.core.journey import WORD_BUCKETS, Journey, JourneyEvent, fold, word_buckets
from opportune.engine.retraining import retrain_loop
from opportune.engine.rules import RuleBook
from opportune.ml.outcomes.features import BASE, LAYOUT, FeatureSpec, spec_for, vector
from opportune.settings import Settings
from opportune.store.db import make_engine, migrate
from opportune.workspace import load_workspace

T0 = 1_760_000_000_000
SITE = "http://localhost:8000/demo"


def workspace_dir(folder: Path) -> Path:
    """The example workspace's site, pages, segments and outcomes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("sites.yaml", "pages.yaml", "segments.yaml", "outcomes.yaml"):
        shutil.copy(EXAMPLE_WORKSPACE / name, folder / name)
    return folder


def _spec(tmp_path: Path) -> FeatureSpec:
    return spec_for(RuleBook(load_workspace(workspace_dir(tmp_path))).ruleset)


def _journey(*events: JourneyEvent, landing: str | None = None) -> Journey:
    j = Journey("s", T0, facts={"landingUrl": landing} if landing else {})
    for ev in events:
        fold(j, ev)
    return j


def test_words_of_searches_clicks_and_addresses_are_counted_in_hashed_buckets() -> None:
    j = _journey(
        JourneyEvent("page_view", T0, url=f"{SITE}/search.html?q=personal+loan&utm_source=x"),
        JourneyEvent("search", T0 + 1, url=f"{SITE}/search.html", query="Personal loan"),
        JourneyEvent("click", T0 + 2, url=f"{SITE}/product.html", name="Apply now"),
        JourneyEvent("page_view", T0 + 3, url=f"{SITE}/confirmation.html?ref=OB-4X2Z9Q"),
        JourneyEvent("page_view", T0 + 4, url=f"{SITE}/index.html?gclid=abcdefghij"),
        JourneyEvent("scroll", T0 + 5, url=f"{SITE}/index.html", attributes={"depth": 25}),
    )
    loan, personal = word_buckets("loan")[0], word_buckets("personal")[0]
    apply, now = word_buckets("apply now")
    want: dict[int, int] = {}
    for b in (loan, personal, loan, personal, apply, now):  # the URL's words and the query's
        want[b] = want.get(b, 0) + 1
    # Campaign tags, click ids and values with digits (references, tokens) are left out.
    assert j.words == want
    assert all(0 <= b < WORD_BUCKETS for b in j.words)
    assert word_buckets("Loan, LOAN 2x") == (loan, loan)


def test_layout_2_adds_the_current_and_landing_page_group_and_the_words(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path)
    assert spec.layout == LAYOUT == 2
    names = spec.names
    assert names[: len(BASE)] == list(BASE)
    assert len(names) == len(set(names))
    j = _journey(
        JourneyEvent("page_view", T0, url=f"{SITE}/product.html?utm_campaign=loans"),
        JourneyEvent("click", T0 + 10, url=f"{SITE}/product.html", name="Apply now"),
        JourneyEvent("page_view", T0 + 20, url=f"{SITE}/apply.html"),
        landing=f"{SITE}/product.html?utm_campaign=loans",
    )
    x = dict(zip(names, vector(j, {}, T0 + 30, spec), strict=True))
    assert x["page:loan-form"] == 1.0 and x["page:product"] == 0.0
    assert x["landing:product"] == 1.0 and x["landing:loan-form"] == 0.0
    for b in word_buckets("apply now"):
        assert x[f"word:{b:02d}"] == 1.0
    assert sum(v for k, v in x.items() if k.startswith("word:")) == 2.0
    again = FeatureSpec.from_json(spec.to_json())
    assert again == spec and again.pages.of(f"{SITE}/apply.html") == ("loan-form",)


def test_a_model_saved_with_layout_1_is_served_its_own_vector(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    # A spec.json written before layouts were numbered.
    old = FeatureSpec.from_json(
        {"pageGroups": list(spec.page_groups), "outcomes": list(spec.outcomes), "segments": []}
    )
    assert old.layout == 1
    assert old.names == [
        *BASE,
        *(f"group:{g}" for g in spec.page_groups),
        *(f"past:{o}" for o in spec.outcomes),
    ]
    j = _journey(JourneyEvent("click", T0, url=f"{SITE}/index.html", name="Apply now"))
    x = vector(j, {}, T0, old)
    assert len(x) == len(old.names)
    assert old.to_json() == {
        "pageGroups": list(spec.page_groups),
        "outcomes": list(spec.outcomes),
        "segments": [],
    }


def test_the_servers_first_retraining_check_waits(tmp_path: Path) -> None:
    """The app starts the loop with a first wait: a test client that lives a few seconds
    never counts its history (no query in a thread is left running at shutdown)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    rules = RuleBook(load_workspace(workspace_dir(tmp_path / "ws")), engine)
    calls = 0

    def clock() -> float:
        nonlocal calls
        calls += 1
        return T0 / 1000

    async def run() -> None:
        task = asyncio.ensure_future(
            retrain_loop(Settings(data_dir=tmp_path), rules, first_check_s=3600, clock=clock)
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
    finally:
        engine.dispose()
    assert calls == 0
