"""Live Now at ``/live`` (admins and supervisors): the visitors on the site now, kept up
to date over server-sent events, and each visitor's journey map.

- ``GET /live``: the page (``web/live/templates/live.html``); its script draws only the
  rows in view, so thousands of visitors do not freeze the browser.
- ``GET /live/stream``: ``text/event-stream``: a ``snapshot`` event (every visitor on the
  board), then every second a ``delta`` (visitors changed, ids gone) when anything moved,
  and a comment line otherwise (keeps proxies from closing the stream).
- ``GET /live/visitors/{id}``: the journey map: the visit's timeline (``engine/timeline``),
  the live scores with why in words (``engine/context``), earlier visits.

The board (``engine/live_now.py``) is shared through Redis when ``OPPORTUNE_REDIS_URL`` is
set, else this process's own; the page says which.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import Response, StreamingResponse

from opportune.api.agent_pages import secure_page
from opportune.api.people import Person, require_person
from opportune.api.report_pages import REPORTS_DIR
from opportune.engine.context import rule_words, scores_in_words, visit_events
from opportune.engine.live_now import LiveBoard, RedisLiveNow
from opportune.engine.timeline import timeline_items
from opportune.ml.outcomes.reasons import human
from opportune.store import timeline

LIVE_DIR: Final = Path(__file__).resolve().parent.parent / "web" / "live"
TICK_S: Final = 1.0
Reader = Annotated[Person, Depends(require_person("admin", "supervisor"))]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _clock(ms: Any) -> str:
    """A moment as the journey map shows it (UTC, to the second)."""
    if not ms:
        return "–"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(ms: Any) -> str:
    s = max(0, int(ms or 0) // 1000)
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def sse(event: str, data: Any) -> bytes:
    """One server-sent event; the JSON has no raw newline, so it is one ``data:`` line.

    >>> sse("delta", {"a": 1})
    b'event: delta\\ndata: {"a":1}\\n\\n'
    """
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


Board = LiveBoard | RedisLiveNow


def board_of(request: Request) -> Board:
    """The board the pages read: shared through Redis when configured, else this process's."""
    rt = request.app.state.runtime
    shared: RedisLiveNow | None = getattr(rt, "live_now", None)
    return shared if shared is not None else rt.ingestor.live_now


async def board_events(
    board: Board, request: Request, *, tick_s: float = TICK_S
) -> AsyncIterator[bytes]:
    """The stream of one page: a snapshot, then a delta each tick that has changes."""
    rows, version = await board.read_snapshot(_now_ms())
    yield sse("snapshot", {"visitors": rows, "version": version, "pid": os.getpid()})
    while not await request.is_disconnected():
        await asyncio.sleep(tick_s)
        found = await board.read_changes(version, _now_ms())
        if found is None:  # fell too far behind the removals kept: start over
            rows, version = await board.read_snapshot(_now_ms())
            yield sse("snapshot", {"visitors": rows, "version": version, "pid": os.getpid()})
            continue
        changed, gone, version = found
        if not changed and not gone:
            yield b": idle\n\n"
            continue
        yield sse("delta", {"changed": changed, "gone": gone, "version": version})


def _journey_map(request: Request, visitor_id: str) -> dict[str, Any] | None:
    """What the database holds of the visitor's latest visit (None: never seen)."""
    rt = request.app.state.runtime
    titles = {m.name: (getattr(m, "title", "") or human(m.name)) for m in rt.rules.maps}
    with rt.ingestor.engine.connect() as conn:
        visit = timeline.visit_of(conn, visitor_id, at_ms=None)
        if visit is None:
            return None
        facts = timeline.facts_since(conn, visit, since_ms=0)
        devices = [visitor_id]
        if visit.get("customer_id"):
            devices = timeline.visitors_of(conn, visit["customer_id"]) or devices
        past = timeline.earlier_visits(conn, visitor_ids=devices, before_ms=visit["started_at"])
    return {"visit": visit, "items": timeline_items(facts, map_titles=titles), "past": past}


async def _scores(request: Request, visitor_id: str, session_id: str) -> list[dict[str, Any]]:
    """The live scores of the visit with why in words, as the agent's context panel has
    them (none once the visit has left the live state or when nothing is scored)."""
    rt = request.app.state.runtime
    ingestor, rules = rt.ingestor, rt.rules
    now = _now_ms()
    state = await ingestor.live.peek(visitor_id, now)
    j = state.journey if state is not None else None
    if state is None or j is None or j.session_id != session_id or not j.scores:
        return []
    if not j.is_current(rules.ruleset.fingerprint):
        return []  # built under other rules: the next event rebuilds it
    members = rules.ruleset.members(j, state.assignments, now)
    events = await asyncio.to_thread(visit_events, ingestor.engine, session_id)
    return scores_in_words(
        ingestor.scorer,
        j,
        members,
        max(j.last_at, j.started_at),
        events=events,
        pages=rules.ruleset.pages,
        known=rule_words(rules),
    )


def live_pages_router(live_dir: Path = LIVE_DIR) -> APIRouter:
    """``/live``, ``/live/stream`` and ``/live/visitors/{id}``."""
    env = Environment(
        loader=FileSystemLoader([live_dir / "templates", REPORTS_DIR / "templates"]),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clock"] = _clock
    env.filters["duration"] = _duration
    api = APIRouter(prefix="/live", include_in_schema=False)

    @api.get("")
    async def page(request: Request, person: Reader) -> Response:
        rt = request.app.state.runtime
        board = board_of(request)
        segments = {
            d.name: {"colour": getattr(d, "colour", ""), "label": d.description or human(d.name)}
            for d, _ in rt.rules.docs("segment")
        }
        html = env.get_template("live.html").render(
            user=person.user, csrf=person.session.csrf, pid=os.getpid(),
            window_min=board.window_ms // 60_000, shared=board.shared,
            segments_json=json.dumps(segments).replace("<", "\\u003c"),
        )  # fmt: skip
        return secure_page(html)

    @api.get("/stream")
    async def stream(request: Request, person: Reader) -> Response:
        return StreamingResponse(
            board_events(board_of(request), request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @api.get("/visitors/{visitor_id}")
    async def visitor(request: Request, visitor_id: str, person: Reader) -> Response:
        if len(visitor_id) > 128:
            raise HTTPException(404, detail={"code": "not_found", "message": "no such visitor"})
        found = await asyncio.to_thread(_journey_map, request, visitor_id)
        if found is None:
            raise HTTPException(
                404, detail={"code": "not_found", "message": f"no visitor {visitor_id!r}"}
            )
        scores = await _scores(request, visitor_id, found["visit"]["id"])
        now = await board_of(request).read_one(visitor_id)
        html = env.get_template("visitor.html").render(
            user=person.user, csrf=person.session.csrf, visitor_id=visitor_id,
            visit=found["visit"], items=found["items"], past=found["past"], scores=scores,
            segments=now["segments"] if now is not None else [], human=human,
            scores_json=json.dumps(
                [{"label": human(s["outcome"]), "p": s["probability"]} for s in scores]
            ).replace("<", "\\u003c"),
        )  # fmt: skip
        return secure_page(html)

    return api
