"""The server's Prometheus metrics: every metric object, and the few calls that feed them.

The points that know a number call one function here (the tracking endpoint with a batch's
answer, the engager with a decision, the router with its assignments, the scorer with its
time); ``api/health.py`` serves them at ``/metrics``. Figures that are facts of the
database or of Redis (interactions waiting per queue, webhook calls pending, visitors on
Live Now) are not kept here: ``/metrics`` reads them when scraped, so every process of a
deployment answers the same.

Several worker processes (``opportune serve --workers N``) share their counters through
prometheus_client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set by ``serve``
before any worker imports this module, each worker writes its values to files there and a
scrape of any worker sums them (docs/deployment.md).

Refusal reasons are free text for people; as labels they are a small fixed set of kinds:

>>> refusal_kind("too old: older than 3600 s"), refusal_kind("page_view needs url")
('too_old', 'missing_field')
>>> refusal_kind("something new")
'other'
>>> from prometheus_client import REGISTRY
>>> def duplicates():
...     return REGISTRY.get_sample_value("opportune_events_total", {"result": "duplicate",
...                                                                 "reason": ""})
>>> before = duplicates()
>>> counted(accepted=0, duplicates=2, refusals=[])
>>> duplicates() - before
2.0
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from typing import Any, Final

from prometheus_client import Counter, Gauge, Histogram

# Latency of one /v1/events batch, from the request's start to its answer: the group
# commit's fsync dominates on SQLite (a few ms), PostgreSQL's commit and Redis round trips
# on a shared deployment.
BATCH_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# One event's outcome models: tens of microseconds each.
SCORING_BUCKETS: Final = (2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.05)

EVENTS = Counter(
    "opportune_events",
    "Events sent to /v1/events by what became of them (result: accepted, duplicate or "
    "refused; reason: the kind of refusal)",
    ["result", "reason"],
)
BATCHES = Counter(
    "opportune_event_batches", "Requests to /v1/events by HTTP status of the answer", ["status"]
)
BATCH_SECONDS = Histogram(
    "opportune_event_batch_seconds",
    "Seconds from a /v1/events request's start to its answer",
    buckets=BATCH_BUCKETS,
)
DECISIONS = Counter(
    "opportune_decisions",
    "Action-map decision records (qualified, holdout, blocked, offered) by map and state",
    ["map", "state"],
)
SCORING_SECONDS = Histogram(
    "opportune_scoring_seconds",
    "Seconds to score one event with every active outcome model",
    buckets=SCORING_BUCKETS,
)
ROUTED = Counter(
    "opportune_routing_decisions",
    "Interactions assigned to an agent, by routing method (standard, predictive...)",
    ["method"],
)
STORAGE_ERRORS = Counter(
    "opportune_storage_errors",
    "Failures of the database or Redis met by the server (backend), by where (ingest, "
    "rules, routing)",
    ["backend", "where"],
)
# A gauge each process sets for itself; a scrape sums the processes alive.
WRITER_BACKLOG = Gauge(
    "opportune_writer_backlog",
    "Write jobs waiting for the group commit, summed over the server's processes",
    multiprocess_mode="livesum",
)

_ACCEPTED = EVENTS.labels(result="accepted", reason="")
_DUPLICATE = EVENTS.labels(result="duplicate", reason="")
_BY_STATUS: dict[int, Any] = {}
# The refusal texts (core/events.check_event, the writer's verdicts, identity) by their
# first words: a bounded label set however the wording changes.
_KINDS: Final = (
    ("too old", "too_old"),
    ("in the future", "in_future"),
    ("text the database cannot store", "unstorable_text"),
    ("identity and traits", "misplaced_identity"),
    ("identify needs", "missing_identity"),
)


def refusal_kind(reason: str) -> str:
    """The label of a refusal reason: a short fixed name, ``other`` for a text not known."""
    for prefix, kind in _KINDS:
        if reason.startswith(prefix):
            return kind
    if " needs " in reason:
        return "missing_field"
    if "refused" in reason or "invalid" in reason:
        return "identifier_refused"
    return "other"


def counted(*, accepted: int, duplicates: int, refusals: Iterable[str]) -> None:
    """Count one answered batch's events."""
    if accepted:
        _ACCEPTED.inc(accepted)
    if duplicates:
        _DUPLICATE.inc(duplicates)
    for reason in refusals:
        EVENTS.labels(result="refused", reason=refusal_kind(reason)).inc()


def answered(status: int, seconds: float) -> None:
    """One /v1/events request answered with ``status`` after ``seconds``."""
    child = _BY_STATUS.get(status)
    if child is None:  # a few statuses ever: 200, 400, 403, 413, 503...
        child = _BY_STATUS[status] = BATCHES.labels(status=str(status))
    child.inc()
    BATCH_SECONDS.observe(seconds)


def decided(records: Iterable[tuple[str, str]]) -> None:
    """A decision's records, as (map, state) pairs."""
    for name, state in records:
        DECISIONS.labels(map=name, state=state).inc()


def routed(methods: Iterable[str]) -> None:
    """Assignments made, by the method of each."""
    for method in methods:
        ROUTED.labels(method=method).inc()


def storage_error(exc: BaseException, where: str) -> str | None:
    """Count ``exc`` if the database or Redis raised it (or caused it); its backend."""
    backend = backend_of(exc)
    if backend is not None:
        STORAGE_ERRORS.labels(backend=backend, where=where).inc()
    return backend


def backend_of(exc: BaseException | None) -> str | None:
    """``redis``, ``database`` or None: which store an exception (or its cause) came from.

    >>> backend_of(ConnectionRefusedError()) is None
    True
    """
    from redis.exceptions import RedisError
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, RedisError):
            return "redis"
        if isinstance(exc, DBAPIError | SQLAlchemyError):
            return "database"
        module = type(exc).__module__
        if module.startswith(("psycopg", "sqlite3")):
            return "database"
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def forget_dead_processes(directory: str | None) -> list[int]:
    """Drop the live gauges of the processes gone from ``directory`` (multiprocess mode): a
    worker killed and replaced must not count its last backlog for ever. Returns their pids.

    >>> forget_dead_processes(None)
    []
    """
    if not directory:
        return []
    from prometheus_client import multiprocess

    gone = []
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = int(path.rsplit("_", 1)[1].split(".")[0])
        if pid != os.getpid() and not _alive(pid):
            gone.append(pid)
    for pid in sorted(set(gone)):
        multiprocess.mark_process_dead(pid, directory)
    return sorted(set(gone))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
