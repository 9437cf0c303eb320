"""``opportune import events FILE`` through the real command line: bad rows named by line,
a rerun stores nothing twice, ``--resume`` goes on after the checkpoint, the original
timestamps and visits are kept, CSV as well as JSON lines, and an imported outcome is
recorded as live."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from opportune.api.app import EXAMPLE_WORKSPACE

T0 = 1_709_287_200_000  # 2024-03-01T10:00:00Z
MIN = 60_000


def opportune(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPPORTUNE_")}
    if env.get("PYTHONPATH"):
        paths = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).absolute()) for p in paths if p)
    return subprocess.run(
        [sys.executable, "-m", "opportune", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def run_import(tmp: Path, file: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return opportune(
        "import",
        "events",
        str(file),
        "--data-dir",
        str(tmp / "data"),
        "--workspace",
        str(EXAMPLE_WORKSPACE),
        *more,
        cwd=tmp,
    )


def rows(tmp: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp / "data" / "opportune.db") as conn:
        return list(conn.execute(sql))


def ev(vid: str, eid: str, type_: str, ts: int, **more: Any) -> dict[str, Any]:
    return {"visitorId": vid, "id": eid, "type": type_, "ts": ts, **more}


def write_lines(path: Path, lines: list[dict[str, Any] | str]) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


# Two visits of one visitor (30 minutes apart: more than the 20-minute timeout), the second
# landing from a campaign, identified by customerId and submitting a loan; a second visitor.
HISTORY: list[dict[str, Any]] = [
    ev("va", "a1", "page_view", T0, url="https://bank.example/", referrer="https://g.com/"),
    ev("va", "a2", "search", T0 + MIN, url="https://bank.example/s?q=loan", query="loan"),
    ev("vb", "b1", "page_view", T0 + 2 * MIN, url="https://bank.example/cards"),
    ev("va", "a3", "page_view", T0 + 31 * MIN, url="https://bank.example/?utm_source=news"),
    ev(
        "va",
        "a4",
        "custom",
        T0 + 33 * MIN,
        url="https://bank.example/apply",
        name="loan_submitted",
        attributes={"amount": 5000},
        customerId="C-1001",
    ),
]


def test_timestamps_visits_identity_and_outcomes_are_kept(tmp_path: Path) -> None:
    done = run_import(tmp_path, write_lines(tmp_path / "h.jsonl", HISTORY))
    assert done.returncode == 0, done.stderr
    assert "5 lines: 6 events imported, 0 already stored, 0 refused" in done.stderr
    # The original times, not the import's.
    assert rows(
        tmp_path, "SELECT event_id, ts FROM events WHERE type != 'identify' ORDER BY ts"
    ) == [
        ("a1", T0),
        ("a2", T0 + MIN),
        ("b1", T0 + 2 * MIN),
        ("a3", T0 + 31 * MIN),
        ("a4", T0 + 33 * MIN),
    ]
    visits = rows(
        tmp_path,
        "SELECT visitor_id, number, started_at, last_event_at, event_count, landing_url, "
        "utm_source, referrer_domain FROM sessions ORDER BY visitor_id, number",
    )
    assert visits == [
        ("va", 1, T0, T0 + MIN, 2, "https://bank.example/", None, "g.com"),
        # customerId made an identify just before a4: 3 events in the second visit.
        (
            "va",
            2,
            T0 + 31 * MIN,
            T0 + 33 * MIN,
            3,
            "https://bank.example/?utm_source=news",
            "news",
            None,
        ),
        ("vb", 1, T0 + 2 * MIN, T0 + 2 * MIN, 1, "https://bank.example/cards", None, None),
    ]
    assert rows(tmp_path, "SELECT id, first_seen_at, session_count FROM visitors ORDER BY id") == [
        ("va", T0, 2),
        ("vb", T0 + 2 * MIN, 1),
    ]
    # The customer is linked at the event's time, and the outcome achieved then, with its value.
    assert rows(tmp_path, "SELECT kind, value, created_at FROM customer_identifiers") == [
        ("customer_id", "C-1001", T0 + 33 * MIN)
    ]
    assert rows(tmp_path, "SELECT id, customer_id IS NOT NULL FROM visitors ORDER BY id") == [
        ("va", 1),
        ("vb", 0),
    ]
    assert rows(
        tmp_path,
        "SELECT outcome, visitor_id, achieved_at, value, event_id FROM outcome_achievements",
    ) == [("loan_submitted", "va", T0 + 33 * MIN, 5000.0, "a4")]
    # No offers for the past: nothing the action maps would have done now.
    assert rows(tmp_path, "SELECT count(*) FROM action_events") == [(0,)]
    assert rows(tmp_path, "SELECT count(*) FROM webhook_deliveries") == [(0,)]


def test_bad_rows_are_named_by_line_and_the_rest_is_stored(tmp_path: Path) -> None:
    lines: list[dict[str, Any] | str] = [
        ev("v1", "e1", "page_view", T0, url="https://bank.example/"),
        ev("v1", "e2", "page_view", T0 + 1000),  # no url
        "{not json",
        ev("v1", "e4", "teleport", T0 + 2000),
        "",  # blank lines are skipped, still counted by number
        ev("v1", "e6", "click", T0 + 3000, url="https://bank.example/", colour="red"),
        {"id": "e7", "type": "click", "ts": T0 + 4000},  # no visitor
        ev("v1", "e8", "click", T0 + 5000, url="https://bank.example/x", name="Apply"),
    ]
    done = run_import(tmp_path, write_lines(tmp_path / "h.jsonl", lines))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    problems = [x for x in done.stderr.splitlines() if x.startswith("line ")]
    assert problems == [
        "line 2 (event e2): page_view needs url",
        "line 3: not valid JSON: JSON is malformed: object keys must be strings (byte 1)",
        "line 4: type: Invalid enum value 'teleport'",
        "line 6: Object contains unknown field `colour`",
        "line 7: Object missing required field `visitorId`",
    ]
    assert "7 lines: 2 events imported, 0 already stored, 5 refused" in done.stderr
    assert done.stderr.rstrip().endswith(
        "error: 5 line(s) refused (listed above); the rest is stored"
    )
    assert rows(tmp_path, "SELECT event_id FROM events ORDER BY ts") == [("e1",), ("e8",)]


def test_an_event_earlier_than_the_visitors_stored_ones_is_refused_as_out_of_order(
    tmp_path: Path,
) -> None:
    later = write_lines(tmp_path / "later.jsonl", [ev("v", "x2", "idle", T0 + 10 * MIN)])
    assert run_import(tmp_path, later).returncode == 0
    earlier = write_lines(tmp_path / "earlier.jsonl", [ev("v", "x1", "idle", T0)])
    done = run_import(tmp_path, earlier)
    assert done.returncode == 1
    assert "line 1 (event x1): out of order: earlier than this visitor's event at " in done.stderr
    assert "2024-03-01T10:10:00.000Z" in done.stderr


def test_a_rerun_stores_nothing_twice(tmp_path: Path) -> None:
    file = write_lines(tmp_path / "h.jsonl", HISTORY)
    assert run_import(tmp_path, file).returncode == 0
    tables = (
        "events",
        "event_ids",
        "sessions",
        "visitors",
        "segment_changes",
        "outcome_achievements",
        "customers",
        "customer_identifiers",
        "identity_log",
    )
    before = {t: rows(tmp_path, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}
    again = run_import(tmp_path, file)
    assert again.returncode == 0, again.stderr
    assert "5 lines: 0 events imported, 6 already stored, 0 refused" in again.stderr
    assert {t: rows(tmp_path, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables} == before


def test_resume_goes_on_after_the_checkpoint_of_the_last_committed_line(tmp_path: Path) -> None:
    lines = [ev(f"v{i}", f"e{i}", "idle", T0 + i) for i in range(1, 301)]
    file = write_lines(tmp_path / "h.jsonl", lines)
    checkpoint = tmp_path / "h.jsonl.checkpoint"
    done = run_import(tmp_path, file, "--window", "100")
    assert done.returncode == 0, done.stderr
    assert json.loads(checkpoint.read_text()) == {
        "file": str(file.resolve()),
        "line": 300,
        "offset": file.stat().st_size,
    }
    # As if the first run had stopped after its first window: only that window stored.
    with sqlite3.connect(tmp_path / "data" / "opportune.db") as conn:
        for table in ("events", "event_ids"):
            conn.execute(f"DELETE FROM {table} WHERE CAST(substr(visitor_id, 2) AS INT) > 100")
    offset = sum(len(json.dumps(x)) + 1 for x in lines[:100])
    checkpoint.write_text(json.dumps({"file": str(file.resolve()), "line": 100, "offset": offset}))
    resumed = run_import(tmp_path, file, "--resume", "--window", "100")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after line 100" in resumed.stderr
    # 200 lines read (101..300), the events stored again, none twice.
    assert "200 lines: 200 events imported, 0 already stored, 0 refused" in resumed.stderr
    assert rows(tmp_path, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(300, 300)]


def test_resume_refuses_the_checkpoint_of_another_file(tmp_path: Path) -> None:
    file = write_lines(tmp_path / "h.jsonl", HISTORY)
    (tmp_path / "h.jsonl.checkpoint").write_text(
        json.dumps({"file": "/elsewhere/other.jsonl", "line": 3, "offset": 100})
    )
    done = run_import(tmp_path, file, "--resume")
    assert done.returncode == 1
    assert "is the checkpoint of /elsewhere/other.jsonl, not of" in done.stderr


def test_csv_with_iso_times_and_its_bad_rows_by_line(tmp_path: Path) -> None:
    file = tmp_path / "h.csv"
    file.write_text(
        "visitorId,id,type,ts,url,query,attributes,customerId,name\n"
        "v1,c1,page_view,2024-03-01T10:00:00Z,https://bank.example/,,,,\n"
        'v1,c2,search,2024-03-01T10:01:00+00:00,"https://bank.example/s?q=a,b","a,b",,,\n'
        "v1,c3,custom,2024-03-01T10:02:00,https://bank.example/,,,,quote\n"
        'v1,c4,custom,1709287380000,https://bank.example/,,"{""amount"": 5}",C-9,quote\n'
        "v1,c5,click,yesterday,https://bank.example/,,,,\n",
        encoding="utf-8",
    )
    done = run_import(tmp_path, file)
    assert done.returncode == 1
    problems = [x for x in done.stderr.splitlines() if x.startswith("line ")]
    assert problems == [
        "line 4: ts: give the time's UTC offset (e.g. 2024-03-01T10:02:00Z): '2024-03-01T10:02:00'",
        "line 6: ts: neither milliseconds since the epoch nor an ISO 8601 time: 'yesterday'",
    ]
    stored = rows(tmp_path, "SELECT event_id, ts, query, data FROM events ORDER BY ts, type")
    assert [r[0] for r in stored][:3] == ["c1", "c2", "c4"]
    assert stored[1][1:3] == (T0 + MIN, "a,b")
    assert stored[2][1:] == (T0 + 3 * MIN, None, '{"amount":5}')
    # The identify made from c4's customerId, at c4's time.
    assert stored[3][0].startswith("idn:") and stored[3][1] == T0 + 3 * MIN
    assert len(stored) == 4


def test_an_unknown_csv_column_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    file = tmp_path / "h.csv"
    file.write_text("visitorId,id,type,ts,colour\nv1,c1,idle,1709287200000,red\n")
    done = run_import(tmp_path, file)
    assert done.returncode == 1
    assert "line 1: unknown column(s): colour; the columns are: attributes" in done.stderr
