"""The reports' answer times over many events: raw rows bulk-loaded into SQLite and
PostgreSQL, the rollups rebuilt from them, then every website report over the whole range
up to today (by day, UTC) and over its last 31 past days by hour (Europe/Madrid), each
the best of 3.

The data: visits of 1–9 events (page views, searches, custom events) over ``--days`` days,
a visitor pool a tenth of the events, with segment changes (≈ 0.3 per event), outcomes and
action-map states (≈ 0.25 per event: qualified, blocked with reasons, offered, holdout,
accepted...) as ingestion writes them. Loading uses executemany in large transactions on
SQLite and COPY on PostgreSQL; PostgreSQL runs in a database of its own, dropped after.

Also timed: the rollup rebuild, and one incremental pass after a batch of new events
(what the server's background pass costs). Prints a table and a line for the README's
performance table. Needs PostgreSQL at 127.0.0.1:5432 (``--skip-postgres`` to leave it out).

    python bench/reports.py [--events 10000000] [--days 90] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import Engine, create_engine, text  # noqa: E402

from opportune.core.actionmaps import instance_id  # noqa: E402
from opportune.engine.reports import WEB_REPORTS, Definitions, MapInfo, window  # noqa: E402
from opportune.store.db import make_engine, migrate  # noqa: E402
from opportune.store.reports import distinct_visitors  # noqa: E402
from opportune.store.rollups import catch_up, rebuild  # noqa: E402

PG_ADMIN = os.environ.get(
    "OPPORTUNE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
URLS = [f"https://shop.test/p/{i}" for i in range(400)]
SEGMENTS = [f"segment-{i}" for i in range(20)]
OUTCOMES = ["purchase", "lead", "signup", "demo"]
MAPS = [f"map-{i}" for i in range(12)]
REASONS = ["cap", "showing", "pacing", "schedule", None]
STATES = ["qualified", "blocked", "blocked", "offered", "accepted", "rejected", "timeout"]
DEVICES, BROWSERS = ["mobile", "desktop", "tablet"], ["Chrome", "Safari", "Firefox", "Edge"]
REFERRERS = [None, "google.com", "bing.com", "news.test", "social.test"]
CAMPAIGNS = [None, "spring", "summer", "brand", "retarget"]

COLUMNS = {
    "sessions": (
        "id", "site_id", "visitor_id", "number", "started_at", "last_event_at", "event_count",
        "page_count", "device_type", "browser", "referrer_domain", "utm_campaign", "utm_source",
        "utm_medium",
    ),
    "events": (
        "visitor_id", "ts", "event_id", "site_id", "session_id", "received_at", "seq", "type",
        "url",
    ),
    "visitors": ("id", "site_id", "first_seen_at", "last_visit_at", "session_count"),
    "segment_changes": ("site_id", "segment", "change", "at", "session_id", "visitor_id"),
    "outcome_achievements": (
        "session_id", "outcome", "site_id", "visitor_id", "achieved_at", "value", "event_id",
    ),
    "action_events": (
        "site_id", "map", "instance_id", "state", "reason", "at", "session_id", "visitor_id",
    ),
}  # fmt: skip


def generate(
    n_events: int, days: float, end_ms: int, seed: int = 15, tag: str = ""
) -> Iterator[dict[str, list]]:
    """Chunks of raw rows per table, about 50,000 events each."""
    rng = random.Random(seed)
    start_ms = end_ms - int(days * 86_400_000)
    visitors = max(1, n_events // 10)
    numbers: dict[int, int] = {}
    seen: dict[int, tuple[int, int]] = {}  # visitor: (first visit, latest visit)
    made = k = 0
    chunk: dict[str, list] = {t: [] for t in COLUMNS}
    while made < n_events:
        v = rng.randrange(visitors)
        numbers[v] = numbers.get(v, 0) + 1
        vid, sid, site = f"v{v}", f"s{tag}{k}", "shop" if v % 5 else "blog"
        k += 1
        t = start_ms + rng.randrange(int(days * 86_400_000 * 0.9))
        t0, pages, n = t, 0, min(rng.randint(1, 9), n_events - made)
        a, b = seen.get(v, (t0, t0))
        seen[v] = (min(a, t0), max(b, t0))
        for i in range(n):
            t += rng.randrange(90_000)
            kind = rng.choice(("page_view", "page_view", "page_view", "search", "custom"))
            url = rng.choice(URLS) if kind == "page_view" else None
            pages += kind == "page_view"
            chunk["events"].append((vid, t, f"e{tag}{made + i}", site, sid, t, i, kind, url))
            r = rng.random()
            if r < 0.3:
                change = "entered" if r < 0.22 else "left"
                chunk["segment_changes"].append((site, rng.choice(SEGMENTS), change, t, sid, vid))
            if rng.random() < 0.25:
                m = rng.choice(MAPS)
                state = rng.choice(STATES)
                if state == "offered" and rng.random() < 0.1:
                    state = "holdout"
                why = rng.choice(REASONS) if state == "blocked" else None
                chunk["action_events"].append(
                    (site, m, instance_id(sid, m), state, why, t, sid, vid)
                )
        for o in OUTCOMES:
            if rng.random() < 0.04:
                value = rng.choice((None, 20.0, 55.5))
                chunk["outcome_achievements"].append((sid, o, site, vid, t, value, "x"))
        chunk["sessions"].append(
            (sid, site, vid, numbers[v], t0, t, n, pages, rng.choice(DEVICES),
             rng.choice(BROWSERS), rng.choice(REFERRERS), rng.choice(CAMPAIGNS),
             rng.choice(("ad", None)), rng.choice(("cpc", None)))
        )  # fmt: skip
        made += n
        if len(chunk["events"]) >= 50_000:
            yield chunk
            chunk = {t: [] for t in COLUMNS}
    # The visitors' rows, as the writer keeps them (the reports count on their last visit).
    chunk["visitors"] = [
        (f"v{v}", "shop" if v % 5 else "blog", a, b, numbers[v]) for v, (a, b) in seen.items()
    ]
    yield chunk


def load_sqlite(engine: Engine, chunks: Iterator[dict[str, list]]) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        for chunk in chunks:
            for table, rows in chunk.items():
                cols = COLUMNS[table]
                sql = (
                    f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
                )
                cur.executemany(sql, rows)
            raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def load_postgres(engine: Engine, chunks: Iterator[dict[str, list]]) -> None:
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur:
            for chunk in chunks:
                for table, rows in chunk.items():
                    with cur.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as cp:
                        for row in rows:
                            cp.write_row(row)
                conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
        conn.autocommit = False
    finally:
        raw.close()


def best_of(fn: Callable[[], Any], times: int = 3) -> float:
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def run(name: str, engine: Engine, loader: Callable[..., None], args: argparse.Namespace) -> dict:
    migrate(engine)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end_ms = int(end.timestamp() * 1000)
    t0 = time.perf_counter()
    loader(engine, generate(args.events, args.days, end_ms))
    load_s = time.perf_counter() - t0
    print(f"{name}: loaded in {load_s:.1f} s", flush=True)
    t0 = time.perf_counter()
    built = rebuild(engine)
    rebuild_s = time.perf_counter() - t0
    print(f"{name}: rollups rebuilt in {rebuild_s:.1f} s", flush=True)
    with engine.connect() as conn:
        n_rollups = conn.execute(text("SELECT count(*) FROM report_rollups")).scalar_one()
    # The server's pass after 5 s of a live site: 500 events of visits started in the last
    # half hour, received now.
    now_ms = int(time.time() * 1000)
    catch_up(engine, now_ms=now_ms - 60_000, margin_ms=30_000, max_age_ms=3_720_000)
    fresh = generate(500, 1 / 24, now_ms, seed=99, tag="new")
    loader(
        engine, ({t: [_now(t, r, now_ms) for r in rows] for t, rows in c.items()} for c in fresh)
    )
    t0 = time.perf_counter()
    p = catch_up(engine, now_ms=now_ms, margin_ms=30_000, max_age_ms=3_720_000)
    pass_s = time.perf_counter() - t0
    d = Definitions(
        maps=[MapInfo(m, "content" if i % 2 else "chat", 0.1) for i, m in enumerate(MAPS)],
        outcomes=OUTCOMES,
    )
    # Up to today, as the pages ask by default (then the visitors are one indexed count),
    # and a past range (then they are the distinct visitors of its visits).
    first, last = (end - timedelta(days=args.days)).date(), end.date()
    whole = window(first.isoformat(), last.isoformat(), "UTC", "day", today=last)
    hours = window(
        (last - timedelta(days=31)).isoformat(), (last - timedelta(days=1)).isoformat(),
        "Europe/Madrid", "hour", today=last,
    )  # fmt: skip
    with engine.connect() as conn:  # the two ways of counting visitors agree
        r = whole.range()
        fast = distinct_visitors(conn, r)
        slow = distinct_visitors(conn, r, now_ms=r.end_ms)
        assert fast == slow, (fast, slow)
    times: dict[str, tuple[float, float]] = {}
    for report, build in WEB_REPORTS.items():
        with engine.connect() as conn:
            a = best_of(lambda b=build, c=conn: b(c, whole, d, None))
            h = best_of(lambda b=build, c=conn: b(c, hours, d, None))
        times[report] = (a, h)
    return {
        "name": name, "load_s": load_s, "rebuild_s": rebuild_s, "quarters": built.quarters,
        "rollups": n_rollups, "pass_s": pass_s, "pass_quarters": p.quarters, "times": times,
    }  # fmt: skip


def _now(table: str, row: tuple, now_ms: int) -> tuple:
    """A generated row moved to be received now (the events' ``received_at``), its visitor
    a new one."""
    if table == "events":
        return ("new-" + row[0], *row[1:5], now_ms, *row[6:])
    if table == "visitors":
        return ("new-" + row[0], *row[1:])
    if table in ("sessions", "segment_changes", "outcome_achievements", "action_events"):
        i = COLUMNS[table].index("visitor_id")
        return (*row[:i], "new-" + row[i], *row[i + 1 :])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--skip-sqlite", action="store_true")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_sqlite:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
            results.append(run("SQLite", engine, load_sqlite, args))
            engine.dispose()
    if not args.skip_postgres:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        db = f"opportune_bench_reports_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db}"'))
        try:
            engine = make_engine(f"{PG_ADMIN.rsplit('/', 1)[0]}/{db}")
            results.append(run("PostgreSQL", engine, load_postgres, args))
            engine.dispose()
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            admin.dispose()
    load = os.getloadavg()[0]
    print(f"\n{args.events:,} events over {args.days} days; load average {load:.1f}")
    print(f"{'':12}{'load':>9}{'rebuild':>10}{'rollup rows':>13}{'pass':>9}")
    for r in results:
        print(
            f"{r['name']:12}{r['load_s']:8.1f}s{r['rebuild_s']:9.1f}s{r['rollups']:13,}"
            f"{r['pass_s'] * 1000:7.0f}ms  ({r['pass_quarters']} quarter hours recounted)"
        )
    print(
        f"\n{'report':16}"
        + "".join(f"{r['name'] + f' {args.days} d/day':>22}{'31 d/hour':>14}" for r in results)
    )
    for report in WEB_REPORTS:
        cells = "".join(
            f"{r['times'][report][0] * 1000:19.0f} ms{r['times'][report][1] * 1000:11.0f} ms"
            for r in results
        )
        print(f"{report:16}{cells}")
    worst = {r["name"]: max(max(v) for v in r["times"].values()) for r in results}
    said = ", ".join(f"{n} ≤ {w * 1000:.0f} ms" for n, w in worst.items())
    reached = "reached" if all(w < 1 for w in worst.values()) else "not reached"
    print(
        f"\n| reports over {args.events / 1e6:g} M events ({args.days} days, rollups rebuilt), "
        f"every website report, to today by day and 31 past days by hour | {said} "
        f"(< 1 s: {reached} at this size); rebuild "
        + ", ".join(f"{r['name']} {r['rebuild_s']:.0f} s" for r in results)
        + " | `python bench/reports.py` |"
    )


if __name__ == "__main__":
    main()
