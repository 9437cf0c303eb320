"""The reports' pages at ``/reports`` (admins and supervisors): one page per report with
its date range and time zone, its tables, its charts and CSV downloads.

The page is rendered on the server (``web/reports/templates/``, autoescaped); the charts
are drawn by ``web/reports/static/reports.js`` with the vendored Chart.js from the chart
specs embedded as JSON (never as script). ``/reports/{name}.csv`` is the CSV of one table
for the signed-in browser (the ``/v1`` API wants the admin key instead).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlencode
from zoneinfo import available_timezones

from fastapi import APIRouter, Depends, HTTPException, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from opportune.api.agent_pages import secure_page
from opportune.api.people import Person, require_person
from opportune.api.reports import (
    PARAMS,
    TITLES,
    build,
    parse_site,
    parse_window,
    report_csv,
    split_name,
)
from opportune.engine.reports import Report, Table, Window

REPORTS_DIR: Final = Path(__file__).resolve().parent.parent / "web" / "reports"
Reader = Annotated[Person, Depends(require_person("admin", "supervisor"))]
_ZONES: Final = sorted(z for z in available_timezones() if "/" in z or z == "UTC")


TABLE_TITLES: Final = {
    "overTime": "Over time", "devices": "Devices", "browsers": "Browsers",
    "pages": "Top pages", "referrers": "Referrers", "campaigns": "Campaigns",
    "segments": "Segments", "outcomes": "Outcomes", "bySegment": "Conversion by segment",
    "maps": "Per map", "blocked": "Blocked, by reason", "attributed": "Outcomes attributed",
    "uplift": "Uplift against the holdout (95% interval)", "offers": "Click-through",
    "queues": "Per queue", "agents": "Agents", "occupancy": "Occupancy",
    "comparison": "Predictive vs standard",
}  # fmt: skip
_PERCENT: Final = (
    "Pct", "Rate", "share", "serviceLevel", "shareOfVisits", "clickThrough", "occupancy",
)  # fmt: skip


def fmt(value: Any, column: str) -> str:
    """A cell as the page shows it: rates as percentages, nothing as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float) and column.endswith(_PERCENT):
        return f"{value * 100:.1f}%"
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _col(t: Table, name: str) -> list[Any]:
    i = t.columns.index(name)
    return [row[i] for row in t.rows]


def _integer(series: list[dict[str, Any]]) -> bool:
    """Counts only: the axis needs no fractions."""
    return all(v is None or isinstance(v, int) for s in series for v in s["values"])


def _spec(
    cid: str, kind: str, title: str, labels: list[Any], t: Table, cols: list[str], percent: bool
) -> dict[str, Any]:
    series = [{"name": c, "values": _col(t, c)} for c in cols]
    return {
        "id": cid, "kind": kind, "title": title, "percent": percent, "labels": labels,
        "series": series, "integer": _integer(series),
    }  # fmt: skip


def _line(cid: str, title: str, t: Table, cols: list[str], percent: bool = False) -> dict[str, Any]:
    return _spec(cid, "line", title, _col(t, "bucket"), t, cols, percent)


def _bars(
    cid: str, title: str, t: Table, key: str, cols: list[str], percent: bool = False
) -> dict[str, Any]:
    return _spec(cid, "bar", title, [str(v) for v in _col(t, key)], t, cols, percent)


def _pivot(t: Table, key: str, value: str) -> Table:
    """An over-time table with a row per bucket and ``key`` as columns of ``value``."""
    keys = sorted({str(v) for v in _col(t, key)})
    cells: dict[str, dict[str, Any]] = {}
    for row in t.rows:
        rec = dict(zip(t.columns, row, strict=True))
        cells.setdefault(rec["bucket"], {})[str(rec[key])] = rec[value]
    return Table(("bucket", *keys), [[b, *(c.get(k) for k in keys)] for b, c in cells.items()])


def charts(r: Report) -> list[dict[str, Any]]:
    """What each report draws: lines over time, bars to compare."""
    t = r.tables
    if r.name == "visitors":
        return [
            _line("visits", "Visits over time", t["overTime"], ["visits", "new", "returning"]),
            _bars("devices", "Visits by device", t["devices"], "device", ["visits"]),
            _bars("browsers", "Visits by browser", t["browsers"], "browser", ["visits"]),
        ]
    if r.name == "segments":
        entries = t["overTime"]
        return [
            _bars("segments", "Visits reaching each segment", t["segments"], "segment", ["visits"]),
            _line("entries", "Segment entries over time", entries, list(entries.columns[1:])),
        ]
    if r.name == "outcomes":
        over = t["overTime"]
        return [
            _line("achieved", "Outcomes achieved over time", over, list(over.columns[1:])),
            _bars("rates", "Conversion rate", t["outcomes"], "outcome", ["conversionRate"], True),
        ]
    if r.name == "action-maps":
        stages = ["qualified", "offered", "accepted", "engaged"]
        return [_bars("funnel", "Action-map funnel", t["maps"], "map", stages)]
    if r.name == "content-offers":
        return [_bars("ctr", "Content offers", t["offers"], "map", ["offered", "clicked"])]
    if r.name == "queues":
        over = t["overTime"]
        return [
            _bars("volume", "Interactions per queue", t["queues"], "queue",
                  ["offered", "answered", "abandoned"]),
            _line("asa", "Average speed of answer (s)", _pivot(over, "queue", "asaS"),
                  sorted({str(q) for q in _col(over, "queue")})),
            _line("sl", "Service level", _pivot(over, "queue", "serviceLevel"),
                  sorted({str(q) for q in _col(over, "queue")}), True),
        ]  # fmt: skip
    over = t["overTime"]
    out = []
    for queue in sorted({str(q) for q in _col(over, "queue")}):
        mine = Table(over.columns, [row for row in over.rows if row[1] == queue])
        out.append(
            _line(f"arms-{queue}", f"KPI rate, {queue}: predictive vs standard", mine,
                  ["predictiveRate", "standardRate"], True)
        )  # fmt: skip
    return out


def _query(w: Window, site: str | None, **extra: str) -> str:
    q = {"from": w.first.isoformat(), "to": w.last.isoformat(), "tz": w.tz, "interval": w.interval}
    if site:
        q["site"] = site
    return urlencode({**q, **extra})


def report_pages_router(reports_dir: Path = REPORTS_DIR) -> APIRouter:
    """``/reports`` and ``/reports/{name}`` (``.csv`` for a table's CSV)."""
    env = Environment(
        loader=FileSystemLoader(reports_dir / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    api = APIRouter(prefix="/reports", include_in_schema=False)

    @api.get("")
    async def index(request: Request, person: Reader) -> Response:
        q = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"/reports/visitors{q}", status_code=303)

    @api.get("/{name}")
    async def page(request: Request, name: str, person: Reader) -> Response:
        query = {k: v for k, v in request.query_params.items() if k in (*PARAMS, "table", "format")}
        base, as_csv = split_name(name, query)
        problem: dict[str, str] = {}
        try:
            w = parse_window(query)
            site = parse_site(request, query)
        except HTTPException as exc:
            if as_csv or exc.status_code != 422 or not isinstance(exc.detail, dict):
                raise
            # The page again, the default range shown, the error named at its field.
            problem = {"path": exc.detail.get("path", ""), "message": exc.detail["message"]}
            w, site = parse_window({"tz": "UTC"}), None
        values = {
            "from": w.first.isoformat(), "to": w.last.isoformat(), "tz": w.tz,
            "interval": w.interval,
        }  # fmt: skip
        if problem:
            values.update({k: v for k, v in query.items() if k in values})
        report = await run_in_threadpool(build, request, base, w, site)
        if as_csv:
            return report_csv(report, w, query.get("table"))
        specs = charts(report)
        html = env.get_template("report.html").render(
            name=base, title=TITLES[base], titles=TITLES, report=report, w=w, site=site or "",
            user=person.user, csrf=person.session.csrf, zones=_ZONES,
            csv_links={k: f"/reports/{base}.csv?{_query(w, site, table=k)}" for k in report.tables},
            query=_query(w, site), charts=specs, table_titles=TABLE_TITLES,
            charts_json=json.dumps(specs).replace("<", "\\u003c"), problem=problem, values=values,
        )  # fmt: skip
        return secure_page(html, 422 if problem else 200)

    return api
