"""The webhook worker: sends the calls that action maps queued (an outbox in the database,
written in the decision's own transaction), with timeouts, retries with exponential backoff
and jitter, and dead letters for calls that never succeed.

Each process runs one worker; a call is claimed by a conditional update before it is sent
(``claimed_until``), so two processes never send the same call at the same time. A call
is sent at least once: a process that dies after sending and before recording it sends
it again after the claim expires — receivers should de-duplicate on the
``Opportune-Delivery`` header (the action instance id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
from sqlalchemy import Engine, and_, select, update

from opportune.store.schema import action_events, webhook_deliveries

log = logging.getLogger(__name__)
_SECRET = re.compile(r"\$\{secret:([A-Za-z0-9_]+)\}")
BACKOFF_BASE_MS = 1_000
BACKOFF_MAX_MS = 10 * 60_000


class MissingSecret(KeyError):
    pass


def resolve_secrets(headers: Mapping[str, str], secrets: Mapping[str, str]) -> dict[str, str]:
    """Header values with ``${secret:NAME}`` replaced from the settings' secrets.

    >>> resolve_secrets({"Authorization": "Bearer ${secret:CRM}"}, {"CRM": "t0k"})
    {'Authorization': 'Bearer t0k'}
    """

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in secrets:
            raise MissingSecret(f"secret {name!r} is not set (OPPORTUNE_WEBHOOK_SECRETS)")
        return secrets[name]

    return {k: _SECRET.sub(sub, v) for k, v in headers.items()}


def backoff_ms(attempt: int, rng: random.Random) -> int:
    """Wait before retry number ``attempt`` (1-based): doubling, capped, with full jitter
    over its upper half so that many failed calls do not retry in lockstep.

    >>> [500 <= backoff_ms(1, random.Random(s)) <= 1_000 for s in range(3)]
    [True, True, True]
    """
    ceiling = min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1))
    return int(ceiling / 2 + rng.random() * ceiling / 2)


class WebhookWorker:
    def __init__(
        self,
        engine: Engine,
        *,
        secrets: Mapping[str, str],
        poll_s: float = 0.5,
        claim_ms: int = 60_000,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.secrets = secrets
        self.poll_s = poll_s
        self.claim_ms = claim_ms
        self.rng = rng or random.Random()
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False)
        self.sent = 0
        self.dead = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Until ``stop``: send what is due, then wait a little. A pass in progress is
        finished, not cancelled (its database work runs in a thread)."""
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:  # the database is away: try again next time
                log.exception("webhook worker pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_s)

    def stop(self) -> None:
        self._stop.set()

    async def run_once(self, now_ms: int | None = None) -> int:
        """Send every call due now; return how many were attempted."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        due = await asyncio.to_thread(self._claim, now)
        if due:
            await asyncio.gather(*(self._send(row) for row in due))
        return len(due)

    def _claim(self, now: int) -> list[Any]:
        t = webhook_deliveries
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(t)
                .where(t.c.status == "pending", t.c.next_at <= now, t.c.claimed_until <= now)
                .order_by(t.c.next_at)
                .limit(50)
            ).all()
            claimed = []
            for r in rows:
                got = conn.execute(
                    update(t)
                    .where(and_(t.c.id == r.id, t.c.claimed_until == r.claimed_until))
                    .values(claimed_until=now + self.claim_ms)
                )
                if got.rowcount == 1:
                    claimed.append(r)
        return claimed

    async def _send(self, row: Any) -> None:
        started = int(time.time() * 1000)
        error: str | None = None
        code: str = ""
        try:
            headers = resolve_secrets(json.loads(row.headers), self.secrets)
            headers.setdefault("content-type", "application/json")
            headers["opportune-delivery"] = row.id
            r = await self._client.request(
                row.method,
                row.url,
                content=row.body.encode(),
                headers=headers,
                timeout=row.timeout_ms / 1000,
            )
            if 200 <= r.status_code < 300:
                await asyncio.to_thread(self._done, row, started)
                return
            code, error = f"http_{r.status_code}", f"HTTP {r.status_code}: {r.text[:200]}"
        except MissingSecret as exc:
            code, error = "missing_secret", str(exc)
        except httpx.TimeoutException:
            code, error = "timeout", f"no answer within {row.timeout_ms} ms"
        except httpx.HTTPError as exc:
            code, error = "unreachable", f"{type(exc).__name__}: {exc}"[:300]
        await asyncio.to_thread(self._failed, row, started, code, error or code)

    def _done(self, row: Any, now: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == row.id)
                .values(status="sent", attempts=row.attempts + 1, done_at=now, last_error=None)
            )
            conn.execute(action_events.insert().values(**_event(row, "completed", now, None)))
        self.sent += 1

    def _failed(self, row: Any, now: int, code: str, error: str) -> None:
        attempts = row.attempts + 1
        dead = attempts >= row.max_attempts or code == "missing_secret"
        values: dict[str, Any] = {"attempts": attempts, "last_error": error, "claimed_until": 0}
        if dead:
            values.update(status="dead", done_at=now)
        else:
            values["next_at"] = now + backoff_ms(attempts, self.rng)
        with self.engine.begin() as conn:
            conn.execute(
                update(webhook_deliveries).where(webhook_deliveries.c.id == row.id).values(**values)
            )
            if dead:
                detail = json.dumps({"code": code, "message": error, "attempts": attempts})
                conn.execute(
                    action_events.insert().values(
                        **_event(row, "errored", now, f"{code}: {error}"[:255], detail)
                    )
                )
        if dead:
            self.dead += 1
            log.warning("webhook %s for map %s is a dead letter: %s", row.id, row.map, error)

    async def aclose(self) -> None:
        await self._client.aclose()


def _event(
    row: Any, state: str, at: int, reason: str | None, detail: str | None = None
) -> dict[str, Any]:
    return {
        "site_id": row.site_id,
        "map": row.map,
        "instance_id": row.id,
        "state": state,
        "reason": reason,
        "at": at,
        "session_id": row.session_id,
        "visitor_id": row.visitor_id,
        "customer_id": None,
        "detail": detail,
    }
