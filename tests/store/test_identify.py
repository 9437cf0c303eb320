"""Identify events in the store, on real databases: what two server processes doing it at
once leave behind."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import func, select

from opportune.core.events import Identity
from opportune.store.db import make_engine
from opportune.store.identify import apply_identify
from opportune.store.schema import customers, visitors


def test_concurrent_identify_of_one_new_email_makes_one_customer(pg_url: str) -> None:
    """Two transactions (two server processes) identify the same new email at once."""
    eng = make_engine(pg_url)
    now = int(time.time() * 1000)
    with eng.begin() as c:
        for v in ("t1", "t2"):
            c.execute(
                visitors.insert().values(
                    id=v,
                    site_id="shop",
                    customer_id=None,
                    first_seen_at=now,
                    last_visit_at=now,
                    session_count=1,
                )
            )
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def run(v: str) -> None:
        with eng.begin() as c:
            barrier.wait()
            results[v] = apply_identify(
                c,
                site_id="shop",
                visitor_id=v,
                identity=Identity(email="race@shop.example"),
                traits={},
                now_ms=now,
                default_region="US",
            )

    threads = [threading.Thread(target=run, args=(v,)) for v in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        with eng.connect() as c:
            owners = c.execute(select(visitors.c.customer_id)).scalars().all()
            n_customers = c.execute(select(func.count()).select_from(customers)).scalar()
        assert results["t1"].customer_id == results["t2"].customer_id
        assert set(owners) == {results["t1"].customer_id}
        assert n_customers == 1
    finally:
        eng.dispose()
