"""Every figure the reports read from the rollups equals the same figure recomputed in
Python from the raw rows, on SQLite and PostgreSQL: after the first pass, after passes
that meet late data (events of old visits, action events of old quarters, a commit that
landed behind the last pass), and after rebuilds of everything, of one site, from a date.

The raw rows are random but seeded: two sites, visitors with several visits, URLs viewed
again, segments entered, left and entered again, outcomes, and action maps' states with
blocks (some without a reason), offers and holdouts."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, insert, select, update

from opportune.core.actionmaps import instance_id
from opportune.engine.reports import window
from opportune.store import reports as q
from opportune.store.db import make_engine
from opportune.store.gdpr import erase_customer
from opportune.store.rollups import QUARTER_MS, catch_up, rebuild
from opportune.store.schema import (
    action_events,
    customers,
    events,
    metadata,
    outcome_achievements,
    report_rollups,
    report_rollups_daily,
    segment_changes,
    sessions,
    visitors,
)

T0 = 1_793_491_200_000  # 2026-11-01 00:00 UTC
HOUR = 3_600_000
DAYS = 3
MAX_AGE = HOUR + 120_000
MARGIN = 30_000
NOW1 = T0 + DAYS * 24 * HOUR + HOUR  # the first pass, an hour after the last visit starts
SITES = ("shop", "blog")
URLS = [f"https://x.test/p{i}" for i in range(8)] + [None]
SEGMENTS = ("movers", "buyers", "mobile")
OUTCOMES = ("purchase", "lead")
MAPS = ("chat-help", "promo")
REASONS = ("cap", "showing", None, "pacing")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    yield e
    e.dispose()


@dataclass
class Visit:
    id: str
    site: str
    visitor: str
    number: int
    started: int
    last: int
    pages: int = 0
    n_events: int = 0


@dataclass
class Raw:
    """The raw rows written, and a clock of insertion for the autoincrement ties."""

    rng: random.Random
    visits: dict[str, Visit] = field(default_factory=dict)
    numbers: Counter[str] = field(default_factory=Counter)

    def visit(self, engine: Engine, start: int, site: str, visitor: str, received: int) -> Visit:
        self.numbers[visitor] += 1
        v = Visit(f"s{len(self.visits)}", site, visitor, self.numbers[visitor], start, start)
        self.visits[v.id] = v
        rng = self.rng
        with engine.begin() as conn:
            conn.execute(
                insert(sessions).values(
                    id=v.id, site_id=site, visitor_id=visitor, number=v.number, started_at=start,
                    last_event_at=start, event_count=0, page_count=0,
                    device_type=rng.choice(["mobile", "desktop", None]),
                    browser=rng.choice(["Chrome", "Firefox", "Safari"]),
                    referrer_domain=rng.choice(["google.com", None, "news.test"]),
                    utm_campaign=rng.choice(["spring", None]), utm_source=rng.choice(["ad", None]),
                    utm_medium=rng.choice(["cpc", None]),
                )
            )  # fmt: skip
            # The visitor's row, as the writer keeps it: its latest visit's start.
            known = conn.execute(
                select(visitors.c.last_visit_at).where(visitors.c.id == visitor)
            ).scalar_one_or_none()
            if known is None:
                conn.execute(
                    insert(visitors).values(
                        id=visitor, site_id=site, first_seen_at=start, last_visit_at=start
                    )
                )
            else:
                conn.execute(
                    update(visitors)
                    .where(visitors.c.id == visitor)
                    .values(last_visit_at=max(known, start))
                )
        self.activity(engine, v, start, rng.randint(1, 9), received)
        return v

    def activity(self, engine: Engine, v: Visit, t: int, n: int, received: int) -> None:
        """``n`` events of visit ``v`` from ``t`` on, with what they cause."""
        rng = self.rng
        with engine.begin() as conn:
            for _ in range(n):
                t += rng.randint(0, 6 * 60_000)
                kind = rng.choice(["page_view", "page_view", "search", "custom"])
                conn.execute(
                    insert(events).values(
                        visitor_id=v.visitor, ts=t, event_id=f"e{rng.getrandbits(48)}",
                        site_id=v.site, session_id=v.id, received_at=received, type=kind,
                        url=rng.choice(URLS) if kind == "page_view" else None,
                    )
                )  # fmt: skip
                v.pages += kind == "page_view"
                v.n_events += 1
                v.last = max(v.last, t)
                self._facts(conn, v, t)
            conn.execute(
                update(sessions)
                .where(sessions.c.id == v.id)
                .values(last_event_at=v.last, page_count=v.pages, event_count=v.n_events)
            )

    def _facts(self, conn: Any, v: Visit, t: int) -> None:
        rng = self.rng
        who = {"site_id": v.site, "session_id": v.id, "visitor_id": v.visitor}
        if rng.random() < 0.3:
            change = rng.choice(["entered", "entered", "left", "assigned"])
            seg = rng.choice(SEGMENTS)
            conn.execute(insert(segment_changes).values(segment=seg, change=change, at=t, **who))
        if rng.random() < 0.08:
            name = rng.choice(OUTCOMES)
            done = conn.execute(
                select(func.count()).where(
                    outcome_achievements.c.session_id == v.id,
                    outcome_achievements.c.outcome == name,
                )
            ).scalar_one()
            if not done:
                conn.execute(
                    insert(outcome_achievements).values(
                        outcome=name, achieved_at=t, value=rng.choice([None, 10.0, 2.5]),
                        event_id="x", **who,
                    )
                )  # fmt: skip
        if rng.random() < 0.35:
            m = rng.choice(MAPS)
            state = rng.choice(
                ["qualified", "blocked", "blocked", "offered", "holdout", "accepted", "rejected"]
            )
            self.action(conn, v, m, state, t)

    def action(self, conn: Any, v: Visit, m: str, state: str, at: int) -> None:
        reason = self.rng.choice(REASONS) if state == "blocked" else None
        conn.execute(
            insert(action_events).values(
                site_id=v.site, map=m, instance_id=instance_id(v.id, m), state=state,
                reason=reason, at=at, session_id=v.id, visitor_id=v.visitor,
            )
        )  # fmt: skip


def seed(engine: Engine, rng: random.Random) -> Raw:
    raw = Raw(rng)
    visitors = [f"v{i}" for i in range(25)]
    for _ in range(70):
        start = T0 + rng.randint(0, DAYS * 24 * HOUR)
        who = rng.choice(visitors)  # a visitor id is one site's
        raw.visit(engine, start, SITES[int(who[1:]) % 2], who, received=start)
    return raw


# -- the figures recomputed from the raw rows ------------------------------------------


def _all(engine: Engine, table: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table))]


def _firsts(rows: list[dict[str, Any]], key: Any, at: str) -> list[dict[str, Any]]:
    """The first row (by time, then insertion) of each ``key``."""
    best: dict[Any, dict[str, Any]] = {}
    for r in rows:
        k = key(r)
        if k not in best or (r[at], r.get("id") or r.get("event_id")) < (
            best[k][at],
            best[k].get("id") or best[k].get("event_id"),
        ):
            best[k] = r
    return list(best.values())


def expected(engine: Engine, r: q.Range) -> dict[str, Any]:
    def mine(row: dict[str, Any], at: str) -> bool:
        return r.start_ms <= row[at] < r.end_ms and r.site_id in (None, row["site_id"])

    ss = [s for s in _all(engine, sessions) if mine(s, "started_at")]
    evs = _all(engine, events)
    views = [e for e in evs if e["type"] == "page_view"]
    changes = [c for c in _all(engine, segment_changes) if c["change"] in ("entered", "assigned")]
    wins = _all(engine, outcome_achievements)
    acts = _all(engine, action_events)
    won_at = {(o["session_id"], o["outcome"]): o["achieved_at"] for o in wins}
    out: dict[str, Any] = {}
    n_new = sum(s["number"] == 1 for s in ss)
    out["totals"] = {
        "visits": len(ss), "visitors": len({s["visitor_id"] for s in ss}), "new": n_new,
        "returning": len(ss) - n_new, "pageViews": sum(s["page_count"] for s in ss),
    }  # fmt: skip
    out["by_quarter"] = Counter((s["started_at"] // QUARTER_MS, s["number"] == 1) for s in ss)
    for metric, cols in (
        ("devices", ("device_type",)),
        ("browsers", ("browser",)),
        ("referrers", ("referrer_domain",)),
        ("campaigns", ("utm_campaign", "utm_source", "utm_medium")),
    ):
        out[metric] = Counter(tuple(s[c] for c in cols) for s in ss)
    first_views = _firsts(views, lambda e: (e["session_id"], e["url"]), "ts")
    out["pages"] = {
        (u or ""): (
            sum(1 for e in views if mine(e, "ts") and e["url"] == u),
            sum(1 for e in first_views if mine(e, "ts") and e["url"] == u),
        )
        for u in {e["url"] for e in views if mine(e, "ts")}
    }
    first_in = _firsts(changes, lambda c: (c["session_id"], c["segment"]), "at")
    out["segments"] = {
        seg: (
            sum(1 for c in first_in if mine(c, "at") and c["segment"] == seg),
            len({c["visitor_id"] for c in changes if mine(c, "at") and c["segment"] == seg}),
            sum(1 for c in changes if mine(c, "at") and c["segment"] == seg),
        )
        for seg in {c["segment"] for c in changes if mine(c, "at")}
    }
    out["segment_quarters"] = Counter(
        (c["at"] // QUARTER_MS, c["segment"]) for c in changes if mine(c, "at")
    )
    out["outcomes"] = {
        name: (
            sum(1 for o in wins if mine(o, "achieved_at") and o["outcome"] == name),
            len({o["visitor_id"] for o in wins if mine(o, "achieved_at") and o["outcome"] == name}),
            sum(o["value"] or 0.0 for o in wins if mine(o, "achieved_at") and o["outcome"] == name),
        )
        for name in {o["outcome"] for o in wins if mine(o, "achieved_at")}
    }
    out["outcome_quarters"] = Counter(
        (o["achieved_at"] // QUARTER_MS, o["outcome"]) for o in wins if mine(o, "achieved_at")
    )
    out["conversion"] = Counter(
        (c["segment"], name)
        for c in first_in
        if mine(c, "at")
        for name in OUTCOMES
        if won_at.get((c["session_id"], name), -1) >= c["at"]
    )
    firsts = [
        a for a in _firsts(acts, lambda a: (a["instance_id"], a["state"]), "at") if mine(a, "at")
    ]
    in_range = [a for a in acts if mine(a, "at")]
    rows = Counter((a["map"], a["state"]) for a in in_range)
    inst = Counter((a["map"], a["state"]) for a in firsts)
    out["states"] = {k: (inst[k], inst[k], rows[k]) for k in rows}
    blocked = [a for a in acts if a["state"] == "blocked"]
    why = lambda a: (a["map"], a["reason"] or "")  # noqa: E731
    first_blocks = _firsts(blocked, lambda a: (a["session_id"], *why(a)), "at")
    times = Counter(why(a) for a in blocked if mine(a, "at"))
    visits = Counter(why(a) for a in first_blocks if mine(a, "at"))
    out["blocked"] = {k: (visits[k], times[k]) for k in times}
    arms: dict[tuple[str, str], tuple[int, Counter[str]]] = {}
    for a in firsts:
        if a["state"] in ("offered", "holdout"):
            arm = "engaged" if a["state"] == "offered" else "holdout"
            n, won = arms.get((a["map"], arm), (0, Counter()))
            won.update(o for o in OUTCOMES if won_at.get((a["session_id"], o), -1) >= a["at"])
            arms[(a["map"], arm)] = (n + 1, won)
    out["arms"] = arms
    out["attributed"] = Counter(
        {
            (m, o): n
            for (m, arm), (_, won) in arms.items()
            if arm == "engaged"
            for o, n in won.items()
        }
    )
    return out


def answered(engine: Engine, r: q.Range) -> dict[str, Any]:
    with engine.connect() as conn:
        out: dict[str, Any] = {"totals": q.visit_totals(conn, r)}
        out["by_quarter"] = Counter({(qq, new): n for qq, new, n in q.visits_by_quarter(conn, r)})
        for metric in ("devices", "browsers", "referrers", "campaigns"):
            out[metric] = Counter(
                {tuple(row[:-1]): row[-1] for row in q.visits_by(conn, r, metric)}
            )
        out["pages"] = {u: (v, s) for u, v, s in q.top_pages(conn, r)}
        out["segments"] = {s: (v, p, n) for s, v, p, n in q.segments_reached(conn, r)}
        out["segment_quarters"] = Counter(
            {(qq, s): n for qq, s, n in q.segment_entries_by_quarter(conn, r)}
        )
        out["outcomes"] = {n: (v, p, val) for n, v, p, val in q.outcomes_achieved(conn, r)}
        out["outcome_quarters"] = Counter(
            {(qq, o): n for qq, o, n in q.outcomes_by_quarter(conn, r)}
        )
        out["conversion"] = Counter({(s, o): n for s, o, n in q.conversion_by_segment(conn, r)})
        out["states"] = {(m, s): (i, v, n) for m, s, i, v, n in q.action_states(conn, r)}
        out["blocked"] = {(m, w): (v, n) for m, w, v, n in q.blocked_reasons(conn, r)}
        out["arms"] = {
            k: (a.visits, Counter(a.won)) for k, a in q.map_arms(conn, r, list(MAPS)).items()
        }
        out["attributed"] = Counter({(m, o): n for m, o, n in q.attributed(conn, r)})
    return out


def ranges() -> list[q.Range]:
    whole = window("2026-10-31", "2026-11-04", "UTC", "day", today=date(2026, 11, 5))
    kolkata = window("2026-11-02", "2026-11-03", "Asia/Kolkata", "hour", today=date(2026, 11, 5))
    madrid = window("2026-11-01", "2026-11-01", "Europe/Madrid", "day", today=date(2026, 11, 5))
    # Ends after now: the visitors are counted on their latest visit (store/reports.py).
    to_now = window("2026-10-31", "2027-02-01", "UTC", "day", today=date(2027, 2, 1))
    return [
        to_now.range(),
        to_now.range("blog"),
        whole.range(),
        whole.range("shop"),
        kolkata.range(),
        madrid.range("blog"),
        q.Range(T0 + 29 * QUARTER_MS, T0 + 150 * QUARTER_MS),  # cuts through visits
    ]


def assert_same(engine: Engine) -> None:
    for r in ranges():
        want, got = expected(engine, r), answered(engine, r)
        assert want["totals"]["visits"] > 0 or r.site_id is not None
        for name, value in want.items():
            if name == "outcomes":
                assert got[name].keys() == value.keys(), (r, name)
                for k, (v, p, val) in value.items():
                    assert got[name][k][:2] == (v, p) and got[name][k][2] == pytest.approx(val)
            else:
                assert got[name] == value, (r, name)


def test_rollups_equal_the_raw_figures_after_passes_with_late_data_and_rebuilds(
    engine: Engine,
) -> None:
    rng = random.Random(15)
    raw = seed(engine, rng)
    first = catch_up(engine, now_ms=NOW1, margin_ms=MARGIN, max_age_ms=MAX_AGE)
    assert first.rebuilt and first.rows > 0
    assert_same(engine)

    # Late data, each kind a pass must find: events of a visit started earlier (a later
    # quarter changes its start quarter's page views), a visit whose events landed behind
    # the last pass (a transaction committed late, inside the margin), action events of an
    # old visit written long after (the widget's report of an old offer), a new visit.
    recent = max(raw.visits.values(), key=lambda v: v.started)
    old = min(raw.visits.values(), key=lambda v: v.started)
    now2 = NOW1 + 60_000
    raw.activity(engine, recent, recent.last, 6, received=now2 - 1000)
    raw.visit(engine, NOW1 - 20 * 60_000, "shop", "v-late", received=NOW1 - 10_000)
    with engine.begin() as conn:
        for m in MAPS:
            raw.action(conn, old, m, "offered", old.started + 1)
            raw.action(conn, old, m, "blocked", old.started)
    raw.visit(engine, now2 - 5 * 60_000, "blog", "v1", received=now2)
    second = catch_up(engine, now_ms=now2, margin_ms=MARGIN, max_age_ms=MAX_AGE)
    assert not second.rebuilt and 0 < second.quarters < DAYS * 96
    assert_same(engine)
    # The next pass reads the margin's receipts again; once past it, nothing is recounted.
    for later in (now2 + 2 * MARGIN, now2 + 4 * MARGIN):
        idle = catch_up(engine, now_ms=later, margin_ms=MARGIN, max_age_ms=MAX_AGE)
    assert idle.quarters == 0
    assert_same(engine)

    # Rebuilds: of everything from wrong rows, of one site, from a date.
    with engine.begin() as conn:
        for t in (report_rollups, report_rollups_daily):
            conn.execute(update(t).values(n=t.c.n + 7))
    rebuild(engine, site="shop")
    rebuild(engine, site="blog", since_ms=T0 + 24 * HOUR)
    with engine.connect() as conn:
        wrong = conn.execute(
            select(func.count()).where(
                report_rollups.c.site_id == "blog",
                report_rollups.c.quarter < (T0 + 24 * HOUR) // QUARTER_MS,
            )
        ).scalar_one()
    assert wrong > 0  # before --since: untouched (still off by 7)
    rebuild(engine)
    assert_same(engine)


def test_a_rebuild_drops_the_rollups_of_rows_deleted_since(engine: Engine) -> None:
    raw = seed(engine, random.Random(7))
    catch_up(engine, now_ms=NOW1, margin_ms=MARGIN, max_age_ms=MAX_AGE)
    gone = [v.id for v in raw.visits.values() if v.site == "blog"]
    with engine.begin() as conn:
        for t in (sessions, events, segment_changes, outcome_achievements, action_events):
            conn.execute(
                t.delete().where(
                    t.c.session_id.in_(gone) if t is not sessions else t.c.id.in_(gone)
                )
            )
        conn.execute(visitors.delete().where(visitors.c.site_id == "blog"))
    rebuild(engine)
    with engine.connect() as conn:
        left = conn.execute(
            select(func.count()).where(report_rollups.c.site_id == "blog")
        ).scalar_one()
    assert left == 0
    assert_same(engine)


@pytest.mark.parametrize(
    ("tz", "interval"),
    [
        ("America/New_York", "day"),  # the clocks go back on 2026-11-01 at 06:00 UTC
        ("America/New_York", "hour"),
        ("Asia/Kolkata", "hour"),  # half an hour off UTC
        ("Asia/Kathmandu", "day"),  # a quarter hour off
        ("UTC", "hour"),
    ],
)
def test_buckets_summed_in_the_database_equal_the_quarters_folded(
    engine: Engine, tz: str, interval: str
) -> None:
    seed(engine, random.Random(3))
    catch_up(engine, now_ms=NOW1, margin_ms=MARGIN, max_age_ms=MAX_AGE)
    w = window("2026-10-31", "2026-11-03", tz, interval, today=date(2026, 11, 5))
    r = w.range()
    with engine.connect() as conn:
        for read in (q.visits_by_quarter, q.segment_entries_by_quarter, q.outcomes_by_quarter):
            folded: Counter[tuple[str, Any]] = Counter()
            for quarter, key, n in read(conn, r):
                folded[(w.label(quarter), key)] += n
            summed: Counter[tuple[str, Any]] = Counter()
            for quarter, key, n in read(conn, r, w.stretches()):
                summed[(w.label(quarter), key)] += n
            assert summed == folded and sum(folded.values()) > 0, read.__name__


def test_an_erasure_recounts_the_quarters_of_the_visits_it_deletes(engine: Engine) -> None:
    raw = seed(engine, random.Random(11))
    catch_up(engine, now_ms=NOW1, margin_ms=MARGIN, max_age_ms=MAX_AGE)
    theirs = [v.id for v in raw.visits.values() if v.visitor in ("v3", "v4")]
    assert theirs
    with engine.begin() as conn:
        conn.execute(
            insert(customers).values(id="c1", site_id="shop", created_at=T0, updated_at=T0)
        )
        conn.execute(update(sessions).where(sessions.c.id.in_(theirs)).values(customer_id="c1"))
        conn.execute(
            update(visitors).where(visitors.c.id.in_(["v3", "v4"])).values(customer_id="c1")
        )
    before = answered(engine, ranges()[0])
    with engine.begin() as conn:
        erase_customer(conn, "c1", now_ms=NOW1)
    assert answered(engine, ranges()[0])["totals"]["visits"] == before["totals"]["visits"] - len(
        theirs
    )
    assert_same(engine)


def test_the_migration_creates_the_tables_the_schema_declares(engine: Engine) -> None:
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    mine = ("report_rollup", "agent_presence_log")
    assert [d for d in diffs if any(t in repr(d) for t in mine)] == []
