"""Retention, export and erasure in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Engine, select

from opportune.store.gdpr import purge_older_than
from opportune.store.schema import event_ids, events, sessions, visitors


def test_purge_removes_old_history_and_empty_anonymous_visitors(engine: Engine) -> None:
    with engine.begin() as c:
        for v, t in (("old", 1_000), ("new", 10_000_000)):
            c.execute(
                visitors.insert().values(
                    id=v,
                    site_id="shop",
                    customer_id=None,
                    first_seen_at=t,
                    last_visit_at=t,
                    session_count=1,
                )
            )
            c.execute(
                sessions.insert().values(
                    id=f"s-{v}",
                    site_id="shop",
                    visitor_id=v,
                    number=1,
                    started_at=t,
                    last_event_at=t,
                    event_count=1,
                    page_count=1,
                )
            )
            c.execute(
                events.insert().values(
                    visitor_id=v,
                    ts=t,
                    event_id="e",
                    site_id="shop",
                    session_id=f"s-{v}",
                    received_at=t,
                    seq=0,
                    type="page_view",
                )
            )
            c.execute(event_ids.insert().values(site_id="shop", visitor_id=v, event_id="e", ts=t))
        counts = purge_older_than(c, 5_000_000)
    assert (counts.events, counts.sessions, counts.visitors) == (1, 1, 1)
    with engine.connect() as c:
        assert c.execute(select(visitors.c.id)).scalars().all() == ["new"]
        assert c.execute(select(event_ids.c.visitor_id)).scalars().all() == ["new"]
