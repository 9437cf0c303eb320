"""Identity, merges and GDPR through the HTTP API, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from opportune.api.app import create_app
from opportune.core.conversations import Draft
from opportune.settings import Settings
from opportune.store import conversations as conversations_store
from opportune.store import interactions as interactions_store
from opportune.store.db import make_engine
from opportune.store.schema import (
    conversation_messages,
    erasures,
    events,
    identity_log,
    interactions,
)

KEY = {"x-api-key": "secret"}
SITE = """kind: site
name: shop
key: shop-site-key
origins: ["*"]
defaultPhoneRegion: ES
"""


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "site.yaml").write_text(SITE)
    settings = Settings(
        database_url=db_url, workspace=tmp_path / "ws", data_dir=tmp_path, api_key="secret"
    )
    with TestClient(create_app(settings)) as client:
        yield client


def send(c: TestClient, visitor: str, *events_: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time() * 1000)
    evs = [{"ts": now - 1000 + i, **e} for i, e in enumerate(events_)]
    r = c.post(
        "/v1/events",
        content=json.dumps(
            {"siteKey": "shop-site-key", "visitorId": visitor, "sentAt": now, "events": evs}
        ),
    )
    assert r.status_code == 200, r.text
    return r.json()


def page(i: str, url: str = "https://shop.example/") -> dict[str, Any]:
    return {"id": i, "type": "page_view", "url": url}


def ident(i: str, **identity: str) -> dict[str, Any]:
    return {"id": i, "type": "identify", "identity": identity}


def test_anonymous_history_joins_the_customer_and_a_second_device_too(api: TestClient) -> None:
    first = send(api, "laptop", page("l1"), page("l2"))
    assert first["customerId"] is None
    linked = send(api, "laptop", ident("l3", email="Ana@Shop.example"))
    cid = linked["customerId"]
    assert cid
    phone = send(api, "phone", page("p1"), ident("p2", email="ana@shop.example"))
    assert phone["customerId"] == cid
    cust = api.get(f"/v1/customers/{cid}", headers=KEY).json()
    assert sorted(cust["visitors"]) == ["laptop", "phone"]
    assert cust["identifiers"] == [{"kind": "email", "value": "ana@shop.example"}]
    sess = api.get(f"/v1/customers/{cid}/sessions", headers=KEY).json()["items"]
    assert sorted(s["visitorId"] for s in sess) == ["laptop", "phone"]


def test_two_identified_customers_are_never_merged_silently(api: TestClient) -> None:
    ana = send(api, "d1", ident("a", email="ana@shop.example"))["customerId"]
    bob = send(api, "d2", ident("b", email="bob@shop.example"))["customerId"]
    # Bob logs in on Ana's device: the device switches to Bob; Ana keeps her history.
    switched = send(api, "d1", ident("c", email="bob@shop.example"))
    assert switched["customerId"] == bob
    assert api.get(f"/v1/customers/{ana}", headers=KEY).json()["visitors"] == []
    # One call naming both: the strongest identifier wins, the other is a logged conflict.
    both = send(api, "d3", ident("d", customerId="A-1", email="ana@shop.example"))
    assert both["customerId"] != bob
    assert api.get(f"/v1/customers/{ana}", headers=KEY).status_code == 200


def test_junk_identifiers_are_refused_per_event(api: TestClient) -> None:
    r = send(api, "d1", page("x"), ident("y", email="undefined", phone="600 111 222"))
    assert r["accepted"] == 2
    assert [(x["index"], "placeholder" in x["reason"]) for x in r["refused"]] == [(1, True)]
    cid = r["customerId"]
    idents = api.get(f"/v1/customers/{cid}", headers=KEY).json()["identifiers"]
    assert idents == [{"kind": "phone", "value": "+34600111222"}]  # the site's region


def test_admin_merge_with_preview_and_exact_split(api: TestClient) -> None:
    ana = send(api, "a1", page("1"), ident("2", email="ana@shop.example"))["customerId"]
    ana2 = send(api, "a2", page("3"), ident("4", phone="+34600111222"))["customerId"]
    before = api.get(f"/v1/customers/{ana}", headers=KEY).json()
    preview = api.post(
        "/v1/customers/merge", headers=KEY, json={"sourceId": ana2, "targetId": ana}
    ).json()["preview"]
    assert (preview["visitors"], preview["sessions"], preview["blocking"]) == (1, 1, [])
    # Preview changed nothing.
    assert api.get(f"/v1/customers/{ana2}", headers=KEY).json()["visitors"] == ["a2"]
    done = api.post(
        "/v1/customers/merge",
        headers=KEY,
        json={"sourceId": ana2, "targetId": ana, "preview": False},
    ).json()
    merged = api.get(f"/v1/customers/{ana}", headers=KEY).json()
    assert sorted(merged["visitors"]) == ["a1", "a2"]
    assert len(merged["identifiers"]) == 2
    # New events on the merged device credit the target.
    assert send(api, "a2", page("5"))["customerId"] == ana
    split = api.post(f"/v1/identity-log/{done['merged']['logId']}/split", headers=KEY)
    assert split.status_code == 200
    assert api.get(f"/v1/customers/{ana}", headers=KEY).json() == before | {
        "updatedAt": api.get(f"/v1/customers/{ana}", headers=KEY).json()["updatedAt"]
    }
    assert api.get(f"/v1/customers/{ana2}", headers=KEY).json()["visitors"] == ["a2"]
    again = api.post(f"/v1/identity-log/{done['merged']['logId']}/split", headers=KEY)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "split_refused")


def test_merge_of_two_accounts_is_refused(api: TestClient) -> None:
    a = send(api, "a", ident("1", customerId="A-1"))["customerId"]
    b = send(api, "b", ident("2", customerId="B-2"))["customerId"]
    r = api.post(
        "/v1/customers/merge", headers=KEY, json={"sourceId": a, "targetId": b, "preview": False}
    )
    assert r.status_code == 409
    assert "different accounts" in r.json()["error"]["message"]


def chat_with(db_url: str, visitor_id: str, customer_id: str) -> None:
    """A closed chat of this visitor and its routed interaction, as the chat leaves them."""
    eng = make_engine(db_url)
    try:
        with eng.begin() as c:
            conv = conversations_store.open_conversation(
                c,
                conversation_id="c_eve",
                site_id="shop",
                visitor_id=visitor_id,
                customer_id=customer_id,
                state="queued",
                now_ms=1,
                queue="support",
                registration={"firstName": "Eve"},
            )
            draft = Draft("m1", "visitor", "My IBAN is ES12 3456")
            conversations_store.append(c, conv.id, draft, now_ms=2)
            new = interactions_store.NewInteraction(
                id=conv.id,
                queue="support",
                medium="chat",
                arm="standard",
                features={},
                customer_id=customer_id,
                visitor_id=visitor_id,
            )
            interactions_store.insert(c, new, now_ms=1)
            interactions_store.finish(c, conv.id, status="ended", now_ms=3, wrap_up_code="resolved")
    finally:
        eng.dispose()


def test_export_then_erase_leaves_only_counts(api: TestClient, db_url: str) -> None:
    cid = send(
        api,
        "e1",
        page("1"),
        page("2"),
        {**ident("3", email="eve@shop.example"), "traits": {"plan": "gold"}},
    )["customerId"]
    send(api, "e2", page("4"), ident("5", email="eve@shop.example"))
    send(api, "other", page("6"))
    chat_with(db_url, "e2", cid)
    export = api.get(f"/v1/customers/{cid}/export", headers=KEY).json()
    assert export["customer"]["traits"] == {"plan": "gold"}
    assert export["identifiers"][0]["value"] == "eve@shop.example"
    assert len(export["sessions"]) == 2 and len(export["events"]) == 5
    [chat] = export["conversations"]
    assert [m["text"] for m in chat["messages"]] == ["My IBAN is ES12 3456"]
    assert chat["registration"] == {"firstName": "Eve"}
    erased = api.delete(f"/v1/customers/{cid}", headers=KEY).json()["erased"]
    assert erased == {
        "customers": 1,
        "identifiers": 1,
        "visitors": 2,
        "sessions": 2,
        "events": 5,
        "conversations": 1,
    }
    assert api.get(f"/v1/customers/{cid}", headers=KEY).status_code == 404
    assert api.get("/v1/customers/lookup?email=eve@shop.example", headers=KEY).json() == {
        "customers": []
    }
    eng = make_engine(db_url)
    try:
        with eng.connect() as c:
            assert c.execute(select(func.count()).select_from(events)).scalar() == 1
            assert c.execute(select(erasures.c.counts)).scalar()["events"] == 5
            logs = (
                c.execute(select(identity_log.c.detail).where(identity_log.c.customer_id == cid))
                .scalars()
                .all()
            )
            assert all(d == {} for d in logs)
            # The words are gone; the routed contact stays, with nobody's name on it.
            assert c.execute(select(func.count()).select_from(conversation_messages)).scalar() == 0
            row = c.execute(select(interactions)).one()
            assert (row.customer_id, row.visitor_id, row.wrap_up_code) == (None, None, "resolved")
    finally:
        eng.dispose()
    # The erased device, if it comes back, is a new anonymous visitor.
    assert send(api, "e1", page("7"))["visitNumber"] == 1


def test_api_errors_are_precise(api: TestClient) -> None:
    assert api.get("/v1/visitors/x").status_code == 401
    assert (
        api.get("/v1/visitors/x", headers={"x-api-key": "wrong"}).json()["error"]["code"]
        == "bad_api_key"
    )
    nf = api.get("/v1/customers/nope", headers=KEY)
    assert (nf.status_code, nf.json()["error"]["code"]) == (404, "not_found")
    bad = api.get("/v1/customers/lookup?phone=12", headers=KEY)
    assert (bad.status_code, bad.json()["error"]["path"]) == (422, "phone")
    assert api.get("/v1/customers/lookup", headers=KEY).status_code == 422
    body = api.post("/v1/customers/merge", headers=KEY, json={"sourceId": "a", "oops": 1})
    assert body.status_code == 422
    cur = api.get("/v1/visitors/x/sessions?cursor=zz", headers=KEY)
    assert cur.status_code == 404  # unknown visitor first


def test_pagination_walks_every_event_once(api: TestClient) -> None:
    send(api, "p", *[page(f"e{i}", f"https://shop.example/{i}") for i in range(23)])
    sid = api.get("/v1/visitors/p/sessions", headers=KEY).json()["items"][0]["id"]
    seen, cursor = [], None
    while True:
        q = f"?limit=5&cursor={cursor}" if cursor else "?limit=5"
        body = api.get(f"/v1/sessions/{sid}/events{q}", headers=KEY).json()
        seen += [e["eventId"] for e in body["items"]]
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert seen == [f"e{i}" for i in range(23)]
