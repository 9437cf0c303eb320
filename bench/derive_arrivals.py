"""Derive the contact-center simulator's arrival profile from the real bank call counts.

Reads ``bank_calls_5min.csv`` (5-minute counts of calls at a North American commercial bank,
weekdays 07:00–21:05, 3 March – 24 October 2003; Weinberg, Brown & Stroud 2007, JASA
102:480, distributed in the R package fpp3 under GPL-3) and writes a small fixture of
derived figures into the package: the mean share of a day's calls per hour of day, the
weekday factors, and the overdispersion beyond Poisson at day and hour level.

    python bench/derive_arrivals.py [--csv PATH] [--out PATH]

The CSV is looked for in ``shared/data/`` beside the repository (where the project's
shared folder sits next to its clone); pass ``--csv`` or set ``OPPORTUNE_ARRIVALS_CSV``
for another copy.

Only derived numbers are written (facts carry over; the data stays where it is).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "opportune" / "sim" / "profiles" / "bank_arrivals_profile.json"
SHARED_CSV = ROOT.parent / "shared" / "data" / "bank_calls_5min.csv"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
FIRST_HOUR, LAST_HOUR = 7, 20  # the single 21:00 interval is left out (0.2% of calls)


def derive(path: Path) -> dict[str, object]:
    days: dict[dt.date, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    five_min: dict[dt.date, list[tuple[int, int]]] = defaultdict(list)
    with path.open() as f:
        for row in csv.DictReader(f):
            t = dt.datetime.fromisoformat(row["interval_start"])
            if not FIRST_HOUR <= t.hour <= LAST_HOUR:
                continue
            n = int(row["calls"])
            days[t.date()][t.hour] += n
            five_min[t.date()].append((t.hour * 12 + t.minute // 5, n))
    hours = list(range(FIRST_HOUR, LAST_HOUR + 1))
    dates = sorted(days)
    counts = np.array([[days[d][h] for h in hours] for d in dates], dtype=float)
    totals = counts.sum(axis=1)
    share = (counts / totals[:, None]).mean(axis=0)
    share /= share.sum()
    wd = np.array([d.weekday() for d in dates])
    mean_day = float(totals.mean())
    weekday = {WEEKDAYS[k]: float(totals[wd == k].mean() / mean_day) for k in range(5)}
    # Day level: spread of a day's volume around its weekday's mean (a multiplicative
    # random effect, as in Weinberg et al.).
    expected_day = np.array([weekday[WEEKDAYS[k]] * mean_day for k in wd])
    daily_cv = float(np.std(totals / expected_day, ddof=1))
    # Hour level, given the day's total: squared CV of the intensity beyond Poisson,
    # E[(n - e)^2 - e] / e^2, so that var = e + k e^2 (a gamma-Poisson mixture).
    e = totals[:, None] * share[None, :]
    hourly_k = float(np.mean(((counts - e) ** 2 - e) / e**2))
    # 5-minute dispersion index given the day's hourly counts (var/mean; 1 is Poisson).
    ratios = []
    for d in dates:
        per_hour = days[d]
        for slot, n in five_min[d]:
            ex = per_hour[slot // 12] / 12
            if ex > 0:
                ratios.append((n - ex) ** 2 / ex)
    return {
        "source": (
            "Derived from 5-minute call counts of a North American commercial bank, weekdays "
            "07:00-21:05, 2003-03-03 to 2003-10-24 (164 days). Weinberg, Brown & Stroud "
            "(2007), Bayesian forecasting of an inhomogeneous Poisson process with "
            "applications to call center data, JASA 102:480. Data distributed in the R "
            "package fpp3 (GPL-3). Written by bench/derive_arrivals.py."
        ),
        "days": len(dates),
        "mean_calls_per_day": round(mean_day, 1),
        "hours": hours,
        "share_by_hour": [round(float(x), 6) for x in share],
        "weekday_factor": {k: round(v, 4) for k, v in weekday.items()},
        "daily_cv": round(daily_cv, 4),
        "hourly_cv": round(float(np.sqrt(max(hourly_k, 0.0))), 4),
        "five_minute_dispersion": round(float(np.mean(ratios)), 3),
    }


def default_csv() -> Path:
    """The call counts: ``OPPORTUNE_ARRIVALS_CSV`` if set, else shared/ beside the repository."""
    given = os.environ.get("OPPORTUNE_ARRIVALS_CSV")
    return Path(given) if given else SHARED_CSV


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=None, help=f"default: {SHARED_CSV}")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    csv_path = args.csv or default_csv()
    if not csv_path.is_file():
        sys.exit(
            f"derive_arrivals: no call counts at {csv_path}; "
            "pass --csv PATH or set OPPORTUNE_ARRIVALS_CSV"
        )
    profile = derive(csv_path)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(profile, indent=2) + "\n")
    print(json.dumps(profile, indent=2))


if __name__ == "__main__":
    main()
