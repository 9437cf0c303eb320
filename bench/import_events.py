"""Import throughput of ``opportune import events`` into SQLite.

Writes a JSON-lines file of the web simulator's traffic (``sim/web``: visits of a seeded
population, page views, searches, clicks, forms, identifies; one line per event with its
visitor and original time), then imports it with the command as an operator runs it, into
a fresh data folder, twice: with a workspace holding only the site (storage alone: visits,
events, identity) and with the example workspace (its segments and outcomes stepped on
every event, as live). A rerun of the same file is timed too (everything already stored).

Prints events/s per row and a line for the README's performance table.

    python bench/import_events.py [--visits 20000] [--keep FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from opportune.sim.web import generate  # noqa: E402

EXAMPLE = ROOT / "src" / "opportune" / "examples" / "workspace"
START_MS = 1_700_000_000_000
_SUMMARY = re.compile(
    r"([\d,]+) events imported, ([\d,]+) already stored.*?([\d.]+) s \(.*?([\d.]+) s of CPU"
)


def write_history(path: Path, visits: int, days: int, *, identifies: bool = True) -> int:
    """The simulator's visits as import lines (per visitor in time order); events written.
    ``identifies=False`` leaves its identify events out (they cost the most: the identity
    rules' statements, as live)."""
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for s in generate(7, start_ms=START_MS, days=days, visitors_per_day=max(1, visits // days)):
            for batch in s.batches:
                for ev in batch.events:
                    if not identifies and ev.type == "identify":
                        continue
                    line = _event(ev)
                    line["visitorId"] = batch.visitor_id
                    if n % 100 == 0:
                        line["userAgent"] = s.user_agent
                    out.write(json.dumps(line, separators=(",", ":")) + "\n")
                    n += 1
    return n


def _event(ev: object) -> dict:
    import msgspec

    return msgspec.to_builtins(ev)


def site_only(folder: Path) -> Path:
    """A workspace with the example's site and nothing else (no segments, no outcomes)."""
    folder.mkdir()
    shutil.copyfile(EXAMPLE / "sites.yaml", folder / "sites.yaml")
    return folder


def run_import(file: Path, data: Path, workspace: Path) -> tuple[int, int, float, float, float]:
    """(imported, already stored, seconds and CPU seconds the command reports, wall s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPPORTUNE_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    t0 = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "opportune",
            "import",
            "events",
            str(file),
            "--quiet",
            "--data-dir",
            str(data),
            "--workspace",
            str(workspace),
            "--checkpoint",
            str(data.parent / f"{data.name}.checkpoint"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    m = _SUMMARY.search(done.stderr)
    if done.returncode != 0 or m is None:
        sys.exit(f"the import failed ({done.returncode}):\n{done.stderr[-2000:]}")
    imported, stored = (int(g.replace(",", "")) for g in m.groups()[:2])
    return imported, stored, float(m.group(3)), float(m.group(4)), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--visits", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument(
        "--rules",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also import with the example workspace's rules",
    )
    ap.add_argument("--keep", type=Path, help="keep the generated file here")
    ap.add_argument(
        "--identifies",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the simulator's identify events (about 2%% of them)",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="opportune-import-"))
    try:
        file = args.keep or tmp / "history.jsonl"
        t0 = time.perf_counter()
        n = write_history(file, args.visits, args.days, identifies=args.identifies)
        size = file.stat().st_size
        print(
            f"{n:,} events of {args.visits:,} visits over {args.days} days, "
            f"{size / 1e6:.1f} MB, written in {time.perf_counter() - t0:.1f} s; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        cases = [("site only (storage, identity)", site_only(tmp / "ws-site"))]
        if args.rules:
            cases.append(("example workspace (its segments and outcomes)", EXAMPLE))
        rows = []
        for label, ws in cases:
            data = tmp / f"data-{len(rows)}"
            imported, _, seconds, cpu, wall = run_import(file, data, ws)
            rows.append((label, imported / seconds, imported / cpu))
            print(
                f"{label}: {imported:,} events in {seconds:.1f} s = {imported / seconds:,.0f} "
                f"events/s; {cpu:.1f} s of CPU = {imported / cpu:,.0f} events per CPU-second "
                f"(command wall time {wall:.1f} s, start-up included)"
            )
            if len(rows) == 1:
                again, stored, seconds2, cpu2, _ = run_import(file, data, ws)
                print(
                    f"  rerun: {again} imported, {stored:,} already stored in {seconds2:.1f} s "
                    f"= {stored / seconds2:,.0f} lines/s ({stored / cpu2:,.0f} per CPU-second)"
                )
        print()
        per = "; ".join(
            f"{label.split(' (')[0]}: {w:,.0f} ({c:,.0f} per CPU-second)" for label, w, c in rows
        )
        print(
            f"| `opportune import events` (JSON lines, sim/web history), SQLite | "
            f"events/s, {per} (≥ 50,000) | `python bench/import_events.py` |"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
