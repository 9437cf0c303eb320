"""What the database says of a write job's events when it does not take them all: some are
already stored (exactly-once is the ``event_ids`` key), some it refuses however often
they are written (a data error, not an outage), or the visitor was written by another
batch since the job's state was read (per-visitor ordering: ``visitors.version``).

Either way the job wrote nothing and its batch is judged again (``Rejudge``): against the
stored truth, or with the refused events refused one by one — so one event can never make
its whole batch fail for ever.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, select

from opportune.store.schema import event_ids


class Rejudge(Exception):
    """The database disagreed with a batch's judgement: judge the batch again."""


class AlreadyStored(Rejudge):
    """Some of a job's events were already in the database; ``ids``: the job's event ids
    found stored (committed)."""

    def __init__(self, ids: set[str]) -> None:
        super().__init__(f"{len(ids)} event(s) already stored")
        self.ids = ids


class Unstorable(Rejudge):
    """The database refuses some of a job's event rows: ``refusals`` maps each one's index
    in its batch to why."""

    def __init__(self, refusals: dict[int, str]) -> None:
        super().__init__("; ".join(f"event {i}: {r}" for i, r in sorted(refusals.items())))
        self.refusals = refusals


class Superseded(Rejudge):
    """Another writer committed for this visitor since the job's live state was read (its
    version moved on): the job wrote nothing; its batch is judged again on a state reloaded
    from the database."""

    def __init__(self, visitor_id: str) -> None:
        super().__init__(f"visitor {visitor_id} was written by another batch meanwhile")
        self.visitor_id = visitor_id


class Conflict(Exception):
    """Inside a transaction: fewer event keys went in than were given (roll back)."""


def claim_keys(cur: Any, sql: str, rows: Sequence[Any]) -> None:
    """SQLite: insert the events' keys into event_ids, skipping those there; any skipped
    means some event is already stored (or twice in this group): ``Conflict``."""
    cur.executemany(sql, [(r.site_id, r.visitor_id, r.event_id, r.ts) for r in rows])
    if cur.rowcount != len(rows):
        raise Conflict


def is_data_error(exc: BaseException) -> bool:
    """An error the rows cause (the same every time), not an outage: DB-API ``DataError``
    or ``IntegrityError`` of either driver, or text the driver cannot encode."""
    if isinstance(exc, UnicodeError):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"DataError", "IntegrityError"})


def stored_ids(engine: Engine, _sql: str, rows: Sequence[Any]) -> set[str]:
    """The event ids of ``rows`` (one visitor's batch) already committed."""
    first = rows[0]
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(event_ids.c.event_id).where(
                    event_ids.c.site_id == first.site_id,
                    event_ids.c.visitor_id == first.visitor_id,
                    event_ids.c.event_id.in_([r.event_id for r in rows]),
                )
            ).scalars()
        )


def unstorable_rows(engine: Engine, insert_sql: str, rows: Sequence[Any]) -> dict[int, str]:
    """Each event row inserted alone with ``insert_sql``, in a transaction rolled back:
    those the database refuses, by index in their batch (``seq``), with its reason."""
    bad: dict[int, str] = {}
    with engine.connect() as conn:
        for row in rows:
            trans = conn.begin()
            try:
                conn.exec_driver_sql(insert_sql, tuple(row))
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                bad[row.seq] = "the database cannot store this event: " + _first_line(exc)
            finally:
                trans.rollback()
    return bad


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:200]
