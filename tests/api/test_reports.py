"""Reports over HTTP on SQLite and PostgreSQL: the JSON of every report, CSV (both ways of
asking), every bad parameter named, the API key, and the pages' role checks."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from opportune.api.reports import TITLES

KEY = {"X-API-Key": "k"}
ORIGIN = "http://127.0.0.1:8000"
HOSTILE = "=cmd|' /C calc'!A0<script>alert(1)</script>"


@pytest.fixture
def client(staffed: TestClient) -> TestClient:
    c = staffed
    t = int(time.time() * 1000)
    body = {
        "siteKey": "demo-site-key",
        "visitorId": "v1",
        "sentAt": t,
        "events": [
            {
                "id": "e1",
                "ts": t,
                "type": "page_view",
                "url": f"{ORIGIN}/demo/?utm_campaign={HOSTILE}&utm_medium=cpc",
            }
        ],
    }
    assert c.post("/v1/events", json=body, headers={"origin": ORIGIN}).status_code == 200
    return c


def test_every_report_answers_json_with_its_window(client: TestClient) -> None:
    listed = client.get("/v1/reports", headers=KEY).json()["items"]
    assert [i["name"] for i in listed] == list(TITLES)
    for name in TITLES:
        r = client.get(f"/v1/reports/{name}?tz=Europe/Madrid&interval=hour", headers=KEY)
        assert r.status_code == 200, (name, r.text)
        body = r.json()
        assert body["report"] == name and body["tz"] == "Europe/Madrid"
        assert body["interval"] == "hour" and body["tables"]
        for t in body["tables"].values():
            assert all(len(row) == len(t["columns"]) for row in t["rows"])
    v = client.get("/v1/reports/visitors", headers=KEY).json()
    assert v["totals"]["visits"] == 1 and v["from"] <= v["to"]
    assert client.get("/v1/reports/visitors?site=demo", headers=KEY).json()["totals"]["visits"] == 1
    assert (time.time() * 1000) < v["endMs"] and v["endMs"] - v["startMs"] == 7 * 86_400_000


def test_csv_by_suffix_or_format_and_formulas_defused(client: TestClient) -> None:
    a = client.get("/v1/reports/visitors.csv?table=campaigns", headers=KEY)
    b = client.get("/v1/reports/visitors?format=csv&table=campaigns", headers=KEY)
    assert a.status_code == b.status_code == 200 and a.text == b.text
    assert a.headers["content-type"].startswith("text/csv")
    assert "attachment" in a.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(a.text)))
    assert rows[0] == ["campaign", "source", "medium", "visits", "share"]
    assert rows[1][0] == "'" + HOSTILE and rows[1][2:] == ["cpc", "1", "1.0"]
    default = client.get("/v1/reports/visitors.csv", headers=KEY).text.splitlines()[0]
    assert default == "bucket,visits,new,returning"  # the first table without ?table


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("tz=Mars/Olympus", "tz"),
        ("from=2026-03-10&to=2026-03-01", "from"),
        ("from=2025-01-01&to=2026-12-31", "to"),
        ("from=2026-01-01&to=2026-03-01&interval=hour", "to"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("interval=week", "interval"),
        ("format=xml", "format"),
        ("format=csv&table=nope", "table"),
        ("site=elsewhere", "site"),
    ],
)
def test_bad_parameters_are_named(client: TestClient, query: str, param: str) -> None:
    r = client.get(f"/v1/reports/visitors?{query}", headers=KEY)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "bad_parameter" and err["path"] == param
    assert param in err["message"] or (param == "tz" and "time zone" in err["message"])


def test_unknown_reports_and_missing_keys(client: TestClient) -> None:
    r = client.get("/v1/reports/nope", headers=KEY)
    assert r.status_code == 404 and "visitors" in r.json()["error"]["message"]
    assert client.get("/v1/reports/visitors").status_code == 401
    assert client.get("/v1/reports/visitors", headers={"X-API-Key": "x"}).status_code == 401


def test_pages_are_for_supervisors_and_admins(
    client: TestClient, sign_in: Callable[..., str]
) -> None:
    r = client.get("/reports/visitors", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/agent/login")
    assert client.get("/reports/visitors.csv", follow_redirects=False).status_code == 303
    sign_in(client, "ana@bank.test")
    assert client.get("/reports/visitors").status_code == 403
    assert client.get("/reports/visitors.csv").status_code == 403
    client.cookies.clear()
    for email in ("sue@bank.test", "root@bank.test"):
        # Signing in from the redirect comes back to the report asked for.
        assert sign_in(client, email, "/reports/queues?tz=UTC") == "/reports/queues?tz=UTC"
        index = client.get("/reports?tz=UTC", follow_redirects=False)
        assert index.status_code == 303 and index.headers["location"] == "/reports/visitors?tz=UTC"
        for name in TITLES:
            page = client.get(f"/reports/{name}?tz=Europe/Madrid")
            assert page.status_code == 200, (name, page.text)
            assert "default-src 'self'" in page.headers["content-security-policy"]
        page = client.get("/reports/visitors?tz=Europe/Madrid")
        assert '<canvas id="chart-visits"' in page.text and "Download CSV" in page.text
        assert HOSTILE not in page.text  # visitor text is escaped in the table and the JSON
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        csv_link = re.search(r'href="(/reports/visitors\.csv\?[^"]+table=devices)"', page.text)
        assert csv_link is not None
        got = client.get(csv_link.group(1).replace("&amp;", "&"))
        assert got.status_code == 200 and got.text.startswith("device,visits,share")
        # A bad parameter: the page again, the error named at its field, the value kept.
        bad = client.get("/reports/visitors?tz=Nowhere/Land&from=2026-03-01&to=2026-03-02")
        assert bad.status_code == 422 and "unknown time zone &#39;Nowhere/Land&#39;" in bad.text
        assert 'value="Nowhere/Land" autocomplete="off" spellcheck="false" aria-invalid="true"' in (
            bad.text
        )
        assert client.get("/reports/visitors.csv?from=x").status_code == 422
        client.cookies.clear()
