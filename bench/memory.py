"""Memory of one server process: RSS at start and per live visitor.

Starts ``opportune serve`` (SQLite, live state in memory, the example workspace), reads
its RSS from ``/proc`` once it answers, then sends one batch of 10 events for each of
``--visitors`` new visitors and reads RSS again (and its peak). The cost per live visitor
is the growth divided by the visitors: their journeys, sessions, segment state and scores
held in memory, plus the allocator's overhead. A last line is the README's row.

    python bench/memory.py [--visitors 20000] [--visitors 100000]

Aims (issue 18): RSS at start ≤ 150 MB; ≤ 2 KB per live visitor; 100,000 live visitors in
≤ 500 MB per process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import Load, free_port, start_server


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident set size and its peak (VmHWM) of ``pid``, in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class NewVisitors(Load):
    """Every batch from a visitor never seen before."""

    def __init__(self, port: int) -> None:
        super().__init__(port, ["unused"], new_share=1.0)


async def send(port: int, visitors: int, connections: int) -> float:
    load = NewVisitors(port)
    per = visitors // connections
    t0 = time.perf_counter()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per):
            await load.one(reader, writer)
        writer.close()

    await asyncio.gather(*[worker() for _ in range(connections)])
    if load.errors:
        print(f"  {load.errors} batches were refused", file=sys.stderr)
    return time.perf_counter() - t0


def measure(visitors: int, connections: int) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="opp-mem-"))
    port = free_port()
    server = start_server("", data, port)
    try:
        time.sleep(2)  # start-up work after the port opens (bot flows, models) settles
        # taskset execs the server: its pid is the Python process's
        start, _ = rss_mb(server.pid)
        elapsed = asyncio.run(send(port, visitors, connections))
        time.sleep(2)
        end, peak = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    return {
        "visitors": visitors,
        "start": start,
        "end": end,
        "peak": peak,
        "per_visitor_kb": (end - start) * 1024 / visitors,
        "seconds": elapsed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--visitors", type=int, action="append", help="(repeatable)")
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    os.environ.setdefault("OPPORTUNE_LOG_LEVEL", "warning")
    rows = [measure(n, args.connections) for n in args.visitors or [20_000]]
    print(f"{'visitors':>9} {'start MB':>9} {'end MB':>8} {'peak MB':>8} {'KB/visitor':>11}")
    for r in rows:
        print(
            f"{r['visitors']:>9,} {r['start']:>9.0f} {r['end']:>8.0f} {r['peak']:>8.0f} "
            f"{r['per_visitor_kb']:>11.2f}"
        )
    first, last = rows[0], rows[-1]
    print(
        f"README: | memory of one process, SQLite, live state in memory, example workspace | "
        f"RSS at start {first['start']:.0f} MB (≤ 150); "
        f"{last['per_visitor_kb']:.1f} KB per live visitor (≤ 2 KB); "
        f"{last['visitors']:,} live visitors: {last['end']:.0f} MB (≤ 500 MB for 100,000) | "
        f"`python bench/memory.py` |"
    )


if __name__ == "__main__":
    main()
