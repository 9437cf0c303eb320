"""The wire's speed on this machine: a bare ASGI callable that reads a ``/v1/events``
batch, decodes and validates it with the project's own msgspec wire model and per-event
rules (``core.events``), and answers what the server would for a clean batch — no
database, no live state, no rules.

``bench/ingest.py`` runs it beside ``opportune serve``, under the same load, pinned to the
same core, and prints the server's events/s as a share of this ceiling (absolute figures
drift from machine to machine; the ratio is what the README reports).

    python bench/ceiling.py --port 8123
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import msgspec
import uvicorn

from opportune.core.events import BATCH_DECODER, check_event

_ENCODE = msgspec.json.encode


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    now = int(time.time() * 1000)
    try:
        batch = BATCH_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        answer, status = {"error": str(exc)}, 422
    else:
        skew = now - batch.sent_at
        refused = [
            r
            for i, e in enumerate(batch.events)
            if (
                r := check_event(
                    e,
                    index=i,
                    now_ms=now,
                    skew_ms=skew,
                    max_age_ms=3_600_000,
                    max_future_ms=300_000,
                )
            )
            is not None
        ]
        answer = {"accepted": len(batch.events) - len(refused), "duplicates": 0}
        status = 200
    out = _ENCODE(answer)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": out})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    # The same server options as `opportune serve` (cli/serve.uvicorn_options).
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="auto",
        http="auto",
    )


if __name__ == "__main__":
    main()
