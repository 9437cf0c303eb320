"""Historical reports: the date range and time zone they cover, their tables, and the
website's reports (visitor activity, segments, outcomes, action maps, content offers).

A report is a few named :class:`Table` s (columns and rows: what the JSON, the CSV and the
page all show). Counts come from ``store/reports.py``; this module folds its quarter hours
into local days or hours and computes the rates and the holdout uplift, whose statistics
are ``core.valuation``'s (the same as ``GET /v1/action-maps/{name}/uplift``).
Definitions of every figure: docs/reports.md.

>>> w = window("2026-03-28", "2026-03-29", "Europe/Madrid", "day", today=date(2026, 4, 1))
>>> w.buckets()
['2026-03-28', '2026-03-29']
>>> (w.end_ms - w.start_ms) // 3_600_000  # the clocks went forward: a 47-hour range
47
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import Connection

from opportune.core.valuation import ArmSummary, compare
from opportune.store import reports as q

Interval = Literal["day", "hour"]
MAX_DAYS: Final = {"day": 400, "hour": 31}
DEFAULT_DAYS: Final = 7


class ReportError(ValueError):
    """A bad report parameter, named (``from``, ``to``, ``tz``, ``interval``...)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Window:
    """Local dates ``first``..``last`` (both included) in ``tz``, counted per ``interval``."""

    first: date
    last: date
    tz: str
    interval: Interval
    _labels: dict[int, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def _ms(self, d: date) -> int:
        return int(datetime(d.year, d.month, d.day, tzinfo=self.zone).timestamp() * 1000)

    @property
    def start_ms(self) -> int:
        return self._ms(self.first)

    @property
    def end_ms(self) -> int:
        return self._ms(self.last + timedelta(days=1))

    def range(self, site_id: str | None = None) -> q.Range:
        return q.Range(self.start_ms, self.end_ms, site_id)

    def label(self, quarter: int) -> str:
        """The local day (``2026-03-29``) or hour (``2026-03-29T03:00+02:00``: the offset
        keeps the hour repeated when the clocks go back apart) of a UTC quarter hour."""
        found = self._labels.get(quarter)
        if found is None:
            t = datetime.fromtimestamp(quarter * q.QUARTER_MS / 1000, self.zone)
            if self.interval == "day":
                found = t.date().isoformat()
            else:
                found = t.replace(minute=0).isoformat(timespec="minutes")
            self._labels[quarter] = found
        return found

    def stretches(self) -> q.Buckets:
        """The range's buckets for the database to sum: stretches of quarter hours with one
        offset from UTC (a new one at each clock change), buckets of a day or an hour."""
        zone, first, end = self.zone, self.start_ms // q.QUARTER_MS, self.end_ms // q.QUARTER_MS

        def offset(quarter: int) -> int:
            t = datetime.fromtimestamp(quarter * q.QUARTER_MS / 1000, zone)
            return int(t.utcoffset().total_seconds()) // 900  # type: ignore[union-attr]

        out: list[tuple[int, int, int]] = []
        start, current = first, offset(first)
        for hour in range(first + 4, end, 4):  # clock changes fall between two hour checks
            if offset(hour) != current:
                change = next(k for k in range(hour - 3, hour + 1) if offset(k) != current)
                out.append((start, change, current))
                start, current = change, offset(change)
        out.append((start, end, current))
        return q.Buckets(96 if self.interval == "day" else 4, tuple(out))

    def buckets(self) -> list[str]:
        """Every bucket of the range in order, empty ones included."""
        if self.interval == "day":
            n = (self.last - self.first).days + 1
            return [(self.first + timedelta(days=i)).isoformat() for i in range(n)]
        first, end = self.start_ms // q.QUARTER_MS, self.end_ms // q.QUARTER_MS
        return list(dict.fromkeys(self.label(k) for k in range(first, end)))


def _date(value: str, param: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ReportError(param, f"{param} must be a date as YYYY-MM-DD, not {value!r}") from None


def window(from_: str | None, to: str | None, tz: str, interval: str, *, today: date) -> Window:
    """The window of a report's parameters; ``ReportError`` naming the bad one. Without
    dates: the last seven days up to ``today`` (a date of ``tz``)."""
    if interval not in MAX_DAYS:
        raise ReportError("interval", f"interval must be day or hour, not {interval!r}")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(
            "tz", f"unknown time zone {tz!r} (use an IANA name such as Europe/Madrid or UTC)"
        ) from None
    last = _date(to, "to") if to else today
    first = _date(from_, "from") if from_ else last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise ReportError("from", f"from ({first}) is after to ({last})")
    days = (last - first).days + 1
    if days > MAX_DAYS[interval]:
        raise ReportError(
            "to",
            f"range too long: {days} days; at most {MAX_DAYS[interval]} by {interval}",
        )
    return Window(first, last, tz, interval)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Table:
    columns: tuple[str, ...]
    rows: list[list[Any]]

    def json(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "rows": self.rows}


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    tables: dict[str, Table]
    totals: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MapInfo:
    """What a report needs of an action map's definition."""

    name: str
    channel: str
    holdout: float


@dataclass(frozen=True, slots=True)
class Definitions:
    """The workspace as the reports see it: maps, outcomes, queues' targets and KPIs."""

    maps: Sequence[MapInfo] = ()
    outcomes: Sequence[str] = ()
    queues: Mapping[str, Any] = field(default_factory=dict)  # name -> QueueInfo


def ratio(num: float, den: float) -> float | None:
    """``num / den`` rounded to 4 places, ``None`` when there is nothing to divide by.

    >>> ratio(1, 3), ratio(0, 0)
    (0.3333, None)
    """
    return round(num / den, 4) if den else None


def _over_time(w: Window, rows: Sequence[tuple[int, Any, int]], keys: Sequence[Any]) -> Table:
    """Rows ``(quarter, key, n)`` as one row per bucket and a column per key."""
    sums: dict[tuple[str, Any], int] = {}
    for quarter, key, n in rows:
        k = (w.label(quarter), key)
        sums[k] = sums.get(k, 0) + n
    return Table(
        ("bucket", *(str(k) for k in keys)),
        [[b, *(sums.get((b, k), 0) for k in keys)] for b in w.buckets()],
    )


# -- the website's reports --------------------------------------------------------------


def visitors(conn: Connection, w: Window, d: Definitions, site: str | None = None) -> Report:
    """Visits over time (new and returning), devices, browsers, pages, referrers, campaigns."""
    r = w.range(site)
    totals = q.visit_totals(conn, r)
    kinds = [
        (qq, "new" if new else "returning", n)
        for qq, new, n in q.visits_by_quarter(conn, r, w.stretches())
    ]
    series = _over_time(w, kinds, ["new", "returning"])
    over = Table(
        ("bucket", "visits", "new", "returning"), [[b, n + o, n, o] for b, n, o in series.rows]
    )

    def by(metric: str) -> list[list[Any]]:
        return [
            [
                *(v if v is not None else "(none)" for v in row[:-1]),
                row[-1],
                ratio(row[-1], totals["visits"]),
            ]
            for row in q.visits_by(conn, r, metric)
        ]

    return Report(
        "visitors",
        {
            "overTime": over,
            "devices": Table(("device", "visits", "share"), by("devices")),
            "browsers": Table(("browser", "visits", "share"), by("browsers")),
            "pages": Table(("url", "pageViews", "visits"), [list(p) for p in q.top_pages(conn, r)]),
            "referrers": Table(("referrer", "visits", "share"), by("referrers")),
            "campaigns": Table(
                ("campaign", "source", "medium", "visits", "share"),
                by("campaigns"),
            ),
        },
        totals,
    )


def segments(conn: Connection, w: Window, d: Definitions, site: str | None = None) -> Report:
    """Segments reached: visits and visitors per segment, entries over time."""
    r = w.range(site)
    visits = q.visit_totals(conn, r, visitors=False)["visits"]
    reached = q.segments_reached(conn, r)
    names = [s for s, *_ in reached]
    return Report(
        "segments",
        {
            "segments": Table(
                ("segment", "visits", "visitors", "entries", "shareOfVisits"),
                [[s, v, p, n, ratio(v, visits)] for s, v, p, n in reached],
            ),
            "overTime": _over_time(w, q.segment_entries_by_quarter(conn, r, w.stretches()), names),
        },
        {"visits": visits},
    )


def outcomes(conn: Connection, w: Window, d: Definitions, site: str | None = None) -> Report:
    """Outcomes achieved (visits, rate, value), over time, and conversion by segment."""
    r = w.range(site)
    visits = q.visit_totals(conn, r, visitors=False)["visits"]
    achieved = q.outcomes_achieved(conn, r)
    names = sorted({n for n, *_ in achieved} | set(d.outcomes))
    got = {n: (v, p, val) for n, v, p, val in achieved}
    reached = {s: v for s, v, _, _ in q.segments_reached(conn, r, visitors=False)}
    conv = q.conversion_by_segment(conn, r)
    rows = [(n, got.get(n, (0, 0, 0.0))) for n in names]
    return Report(
        "outcomes",
        {
            "outcomes": Table(
                ("outcome", "visits", "visitors", "conversionRate", "value"),
                [[n, v, p, ratio(v, visits), val] for n, (v, p, val) in rows],
            ),
            "overTime": _over_time(w, q.outcomes_by_quarter(conn, r, w.stretches()), names),
            "bySegment": Table(
                ("segment", "outcome", "segmentVisits", "converted", "conversionRate"),
                [[s, n, reached.get(s, 0), c, ratio(c, reached.get(s, 0))] for s, n, c in conv],
            ),
        },
        {"visits": visits},
    )


MAP_COLUMNS: Final = (
    "map", "channel", "qualified", "heldOut", "blocked", "blockedVisits", "offered",
    "offeredPct", "accepted", "acceptedPct", "engaged", "engagedPct", "rejected",
    "timedOut", "outcomesAttributed",
)  # fmt: skip
UPLIFT_COLUMNS: Final = (
    "map", "outcome", "engagedVisits", "engagedAchieved", "engagedRate", "holdoutVisits",
    "holdoutAchieved", "holdoutRate", "uplift", "ciLow", "ciHigh", "pValue",
)  # fmt: skip


def _funnel(states: Mapping[tuple[str, str], tuple[int, int, int]], m: str) -> dict[str, int]:
    def n(state: str, i: int = 0) -> int:
        return states.get((m, state), (0, 0, 0))[i]

    return {
        "qualified": n("qualified"), "heldOut": n("holdout"), "blocked": n("blocked"),
        "blockedVisits": n("blocked", 1), "offered": n("offered"), "accepted": n("accepted"),
        # A conversation that started (the widget reports ``started``; ``engaged`` follows
        # it and is not sent yet): an engaged instance has always started.
        "engaged": max(n("started"), n("engaged")),
        "rejected": n("rejected"), "timedOut": n("timeout"),
    }  # fmt: skip


def action_maps(conn: Connection, w: Window, d: Definitions, site: str | None = None) -> Report:
    """Per map the funnel from qualified to engaged, blocks by reason, outcomes attributed,
    and for maps with a holdout the uplift of each outcome with its 95% interval."""
    r = w.range(site)
    states = {(m, s): (i, v, n) for m, s, i, v, n in q.action_states(conn, r)}
    info = {m.name: m for m in d.maps}
    names = sorted({m for m, _ in states} | set(info))
    attributed = q.attributed(conn, r)
    per_map: dict[str, int] = {}
    for m, _, c in attributed:
        per_map[m] = per_map.get(m, 0) + c
    rows = []
    for m in names:
        f = _funnel(states, m)
        eligible = f["qualified"] - f["heldOut"]
        rows.append([
            m, info[m].channel if m in info else "", f["qualified"], f["heldOut"], f["blocked"],
            f["blockedVisits"], f["offered"], ratio(f["offered"], eligible), f["accepted"],
            ratio(f["accepted"], f["offered"]), f["engaged"], ratio(f["engaged"], f["offered"]),
            f["rejected"], f["timedOut"], per_map.get(m, 0),
        ])  # fmt: skip
    held = [m.name for m in d.maps if m.holdout > 0]
    return Report(
        "action-maps",
        {
            "maps": Table(MAP_COLUMNS, rows),
            "blocked": Table(
                ("map", "reason", "visits", "times"), [list(b) for b in q.blocked_reasons(conn, r)]
            ),
            "attributed": Table(("map", "outcome", "visits"), [list(a) for a in attributed]),
            "uplift": Table(
                UPLIFT_COLUMNS, uplift_rows(q.map_arms(conn, r, held), held, d.outcomes)
            ),
        },
    )


def uplift_rows(
    arms: Mapping[tuple[str, str], q.Arm], maps: Sequence[str], outcomes: Sequence[str]
) -> list[list[Any]]:
    """Per map and outcome: each arm's visits achieving the outcome after the decision, and
    the uplift with its interval (``core.valuation.compare``) once both arms have visits.

    >>> arms = {("m", "engaged"): q.Arm(3, {"buy": 1}), ("m", "holdout"): q.Arm(1, {"buy": 1})}
    >>> uplift_rows(arms, ["m"], ["buy"])[0][:9]
    ['m', 'buy', 3, 1, 0.3333, 1, 1, 1.0, -0.6667]
    """
    rows = []
    none = q.Arm(0, {})
    for m in maps:
        engaged, holdout = arms.get((m, "engaged"), none), arms.get((m, "holdout"), none)
        for o in outcomes:
            ke, kh = engaged.won.get(o, 0), holdout.won.get(o, 0)
            row: list[Any] = [m, o, engaged.visits, ke, ratio(ke, engaged.visits)]
            row += [holdout.visits, kh, ratio(kh, holdout.visits)]
            if engaged.visits and holdout.visits:
                c = compare(_binary(ke, engaged.visits), _binary(kh, holdout.visits), binary=True)
                row += [
                    round(c.uplift, 4),
                    round(c.ci_low, 4),
                    round(c.ci_high, 4),
                    round(c.p_value, 4),
                ]
            else:
                row += [None, None, None, None]
            rows.append(row)
    return rows


def _binary(won: int, visits: int) -> ArmSummary:
    """The summary of ``visits`` yes/no labels of which ``won`` are yes (``summarise``'s,
    without the list)."""
    mean = won / visits
    variance = visits * mean * (1 - mean) / (visits - 1) if visits > 1 else 0.0
    return ArmSummary(n=visits, mean=mean, variance=variance, mean_wait_s=0.0, mean_handle_s=0.0)


def content_offers(conn: Connection, w: Window, d: Definitions, site: str | None = None) -> Report:
    """Content offers: shown, clicked (accepted), dismissed (rejected), click-through."""
    states = {(m, s): (i, v, n) for m, s, i, v, n in q.action_states(conn, w.range(site))}
    rows = []
    for m in sorted((m for m in d.maps if m.channel == "content"), key=lambda m: m.name):
        f = _funnel(states, m.name)
        rows.append([
            m.name, f["offered"], f["accepted"], f["rejected"], f["timedOut"],
            ratio(f["accepted"], f["offered"]),
        ])  # fmt: skip
    return Report(
        "content-offers",
        {
            "offers": Table(
                ("map", "offered", "clicked", "dismissed", "timedOut", "clickThrough"), rows
            )
        },
    )


Builder = Callable[[Connection, Window, Definitions, str | None], Report]
WEB_REPORTS: Final[dict[str, Builder]] = {
    "visitors": visitors,
    "segments": segments,
    "outcomes": outcomes,
    "action-maps": action_maps,
    "content-offers": content_offers,
}
