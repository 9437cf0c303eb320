"""The demo's loan outcome needs the journey real sites use: the loan form submitted in
this visit, then the confirmation page. Opening the confirmation page alone (a bookmark,
a shared link, a reload the next day) is not an application. Through the real ingestion
(``POST /v1/events``) on SQLite and PostgreSQL, the example workspace as shipped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from opportune.api.app import create_app
from opportune.settings import Settings
from opportune.store.db import make_engine
from opportune.store.schema import outcome_achievements

ORIGIN = "http://127.0.0.1:8000"
APPLY = f"{ORIGIN}/demo/apply.html"
CONFIRMATION = f"{ORIGIN}/demo/confirmation.html?ref=OB-4X2Z9Q"
LOAN = "loan_submitted"
MIN = 60_000


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=db_url, data_dir=tmp_path, api_key="k", retrain_interval_h=0)
    with TestClient(create_app(settings)) as c:
        yield c


class Visitor:
    def __init__(self, client: TestClient, vid: str) -> None:
        self.client, self.vid, self.n = client, vid, 0

    def send(self, *events: dict[str, Any], ago_ms: int = 0) -> list[str]:
        """The outcomes the server answered as achieved in this visit so far."""
        now = int(time.time() * 1000)
        evs = []
        for e in events:
            self.n += 1
            evs.append({"id": f"{self.vid}-{self.n}", "ts": now - ago_ms + self.n, **e})
        body = {"siteKey": "demo-site-key", "visitorId": self.vid, "sentAt": now, "events": evs}
        r = self.client.post("/v1/events", json=body, headers={"origin": ORIGIN})
        assert r.status_code == 200, r.text
        return list(r.json()["outcomes"])


def page(url: str) -> dict[str, Any]:
    return {"type": "page_view", "url": url}


def submitted(form: str) -> dict[str, Any]:
    return {"type": "form_submitted", "url": APPLY, "name": form, "attributes": {"fields": 9}}


def achieved(db_url: str) -> list[tuple[str, str]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as c:
            rows = c.execute(
                select(outcome_achievements.c.session_id, outcome_achievements.c.outcome)
            )
            return [(r.session_id, r.outcome) for r in rows]
    finally:
        engine.dispose()


def test_opening_the_confirmation_page_directly_is_not_an_application(
    client: TestClient, db_url: str
) -> None:
    v = Visitor(client, "direct")
    assert v.send(page(CONFIRMATION)) == []
    assert v.send(page(CONFIRMATION)) == []  # a reload
    # Another form submitted first (signing in) does not make it one either.
    w = Visitor(client, "signin")
    assert w.send(page(f"{ORIGIN}/demo/login.html"), submitted("login")) == []
    assert w.send(page(CONFIRMATION)) == []
    assert achieved(db_url) == []


def test_the_form_submitted_then_the_confirmation_page_is_one_application(
    client: TestClient, db_url: str
) -> None:
    v = Visitor(client, "applicant")
    assert v.send(page(f"{ORIGIN}/demo/product.html"), page(APPLY)) == []
    assert v.send(submitted("loan")) == []  # not yet: the application may still fail
    assert v.send(page(CONFIRMATION)) == [LOAN]
    assert v.send(page(CONFIRMATION)) == [LOAN]  # a reload: still this visit's one
    assert [o for _, o in achieved(db_url)] == [LOAN]  # recorded once


def test_a_form_submitted_in_an_earlier_visit_does_not_count(
    client: TestClient, db_url: str
) -> None:
    v = Visitor(client, "returning")
    v.send(page(APPLY), submitted("loan"), ago_ms=45 * MIN)  # the site's timeout is 20 min
    assert v.send(page(CONFIRMATION)) == []
    assert achieved(db_url) == []


def test_the_page_recording_the_submission_itself_still_counts(
    client: TestClient, db_url: str
) -> None:
    v = Visitor(client, "recorded")
    custom = {"type": "custom", "url": APPLY, "name": LOAN, "attributes": {"amount": 5000}}
    assert v.send(page(APPLY), submitted("loan"), custom) == [LOAN]
    assert v.send(page(CONFIRMATION)) == [LOAN]
    assert [o for _, o in achieved(db_url)] == [LOAN]  # recorded once
