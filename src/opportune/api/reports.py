"""Historical reports as JSON and CSV: ``GET /v1/reports/{name}`` (admin API key).

Parameters: ``from`` and ``to`` (local dates, both included; the last seven days without
them), ``tz`` (an IANA zone, UTC by default), ``interval`` (``day`` or ``hour``), ``site``
(one site's visits only), ``format=csv`` with ``table`` (the report's first table by
default); ``/v1/reports/{name}.csv`` is the same as ``format=csv``. A bad parameter is a
422 naming it. The pages at ``/reports`` (``api/report_pages.py``) show the same reports.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from opportune.api.auth import admin_router
from opportune.api.errors import error, not_found
from opportune.api.inputs import now_ms
from opportune.core.conditions import parse_duration
from opportune.engine import service_reports
from opportune.engine.reports import (
    WEB_REPORTS,
    Definitions,
    MapInfo,
    Report,
    ReportError,
    Window,
    window,
)
from opportune.engine.service_reports import QueueInfo

TITLES: Final = {
    "visitors": "Visitor activity",
    "segments": "Segments reached",
    "outcomes": "Outcomes achieved",
    "action-maps": "Action maps",
    "content-offers": "Content offers",
    "queues": "Queues and agents",
    "routing": "Predictive routing",
}
PARAMS: Final = ("from", "to", "tz", "interval", "site")


def definitions(rt: Any) -> Definitions:
    """The running workspace (``app.state.runtime``) as the reports see it: maps, outcomes,
    queues' targets and KPIs."""
    rules = rt.ingestor.rules
    router = rt.router
    queues: dict[str, QueueInfo] = {}
    if router is not None:
        for name, doc in router.docs.items():
            target = parse_duration(doc.service_level_within, []) / 1000
            queues[name] = QueueInfo(target_s=target, kpi=router.kpi_of(name))
    return Definitions(
        maps=[MapInfo(m.name, m.channel, m.holdout) for m in rules.maps],
        outcomes=sorted(d.name for d, _ in rules.docs("outcome")),
        queues=queues,
    )


def parse_window(query: dict[str, str]) -> Window:
    """The report window of a query string; a 422 naming the bad parameter."""
    tz = query.get("tz") or "UTC"
    try:
        today = datetime.now(ZoneInfo(tz)).date()
    except Exception:
        today = datetime.now(ZoneInfo("UTC")).date()  # window() names the bad zone
    try:
        return window(
            query.get("from"), query.get("to"), tz, query.get("interval") or "day", today=today
        )
    except ReportError as exc:
        raise error(422, "bad_parameter", str(exc), path=exc.param) from None


REPORT_WAIT_S: Final = 5.0  # a pass in progress takes milliseconds to seconds; a rebuild, minutes


def build(request: Request, name: str, w: Window, site: str | None) -> Report:
    """Report ``name`` over ``w`` on a connection of its own (blocking: call in a thread)."""
    runtime = request.app.state.runtime
    d = definitions(runtime)
    engine = runtime.ingestor.engine
    if name in WEB_REPORTS and runtime.rollups is not None:
        # What was stored up to now is counted; behind a long pass (a rebuild) the report
        # answers from the rollups as they are rather than wait.
        runtime.rollups.catch_up(wait_s=REPORT_WAIT_S)
    with engine.connect() as conn:
        if name in WEB_REPORTS:
            return WEB_REPORTS[name](conn, w, d, site)
        maker = service_reports.queues if name == "queues" else service_reports.routing
        return maker(conn, w, d, site, now_ms=now_ms())


def report_json(r: Report, w: Window) -> dict[str, Any]:
    return {
        "report": r.name,
        "title": TITLES[r.name],
        "from": w.first.isoformat(),
        "to": w.last.isoformat(),
        "tz": w.tz,
        "interval": w.interval,
        "startMs": w.start_ms,
        "endMs": w.end_ms,
        "totals": r.totals,
        "notes": r.notes,
        "tables": {k: t.json() for k, t in r.tables.items()},
    }


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    # A visitor's text (a URL, a campaign) must not run as a formula in a spreadsheet.
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def report_csv(r: Report, w: Window, table: str | None) -> Response:
    """One table of the report as CSV; a 422 naming ``table`` if the report has no such."""
    key = table or next(iter(r.tables))
    if key not in r.tables:
        raise error(
            422,
            "bad_parameter",
            f"table must be one of {', '.join(r.tables)}, not {key!r}",
            path="table",
        )
    t = r.tables[key]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(t.columns)
    writer.writerows([_cell(v) for v in row] for row in t.rows)
    filename = f"opportune-{r.name}-{key}-{w.first}-{w.last}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def split_name(name: str, query: dict[str, str]) -> tuple[str, bool]:
    """The report's name and whether CSV was asked (``.csv`` or ``format=csv``)."""
    csv_asked = name.endswith(".csv")
    base = name.removesuffix(".csv")
    if base not in TITLES:
        raise not_found(f"report {base!r} not found (one of {', '.join(TITLES)})")
    fmt = query.get("format") or ("csv" if csv_asked else "json")
    if fmt not in ("json", "csv"):
        raise error(422, "bad_parameter", f"format must be json or csv, not {fmt!r}", path="format")
    return base, fmt == "csv"


def parse_site(request: Request, query: dict[str, str]) -> str | None:
    """The one site asked for (``site``), or ``None`` for all; a 422 for an unknown one."""
    site = query.get("site") or None
    sites = request.app.state.runtime.workspace.sites
    if site is not None and site not in sites:
        known = ", ".join(sorted(sites)) or "none"
        raise error(422, "bad_parameter", f"unknown site {site!r} (sites: {known})", path="site")
    return site


async def answer(request: Request, name: str) -> Response:
    """A report as JSON or CSV, from the request's query string."""
    query = dict(request.query_params)
    base, as_csv = split_name(name, query)
    w = parse_window(query)
    site = parse_site(request, query)
    report = await run_in_threadpool(build, request, base, w, site)
    if as_csv:
        return report_csv(report, w, query.get("table"))
    return JSONResponse(report_json(report, w))


def reports_router(require_api_key: Callable[..., None]) -> APIRouter:
    """``GET /v1/reports`` (the list) and ``GET /v1/reports/{name}[.csv]``."""
    router = admin_router(require_api_key, tags=["reports"])

    @router.get("/reports")
    def list_reports() -> dict[str, Any]:
        return {"items": [{"name": k, "title": v} for k, v in TITLES.items()]}

    @router.get("/reports/{name}")
    async def get_report(request: Request, name: str) -> Response:
        """A report; query: from, to, tz, interval, site, format, table (docs/reports.md)."""
        return await answer(request, name)

    return router
