"""Outcome models on simulated history, beside the simulator's exact probabilities.

For each outcome of the demo site with enough achievements, on the SAME test prefixes: the
model's ROC AUC next to two ceilings — the *observer's* (the exact posterior given the events
the server saw, ``sim.posterior``: the best any model can do) and the *hidden* oracle's (the
simulator's true probability, which knows the visitor's intent: no model can reach it) —
PR AUC, Brier, ECE, the two baselines (base rate; logistic regression), and AUC after 1, 3, 5
and 10 events for the model and both ceilings. Then the training time for
``--train-sessions`` visits (replay of every visit through the rules step + fitting, on
``--threads`` cores), and the scoring cost per outcome per event through
``LoadedModel.predict_one`` (p50/p99).

The examples come from the simulator through the same replay code as stored visits
(``sim.web_history.build_sim_examples``; the tests check it equals the path through the
database). Aims: AUC within 0.02 of the oracle (read here as the observer's ceiling), ECE
<= 0.02, training 100k visits in under 2 minutes, scoring p99 <= 200 µs.

    python bench/outcome_model.py [--sessions 50000] [--train-sessions 100000] [--quick]
"""

from __future__ import annotations

import os

# LightGBM's OpenMP threads would spin while they wait (slow on a shared 2-core machine);
# this must be set before LightGBM is loaded, as ``opportune train`` does.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.core.session import session_id_for
from opportune.engine.rules import RuleBook
from opportune.ml.calibration import PREFIX_LENGTHS, auc_by_prefix, summary
from opportune.ml.outcomes.features import spec_for
from opportune.ml.outcomes.model import TrainingConfig, train_outcome_model
from opportune.ml.outcomes.registry import ModelRegistry
from opportune.sim.personas import OUTCOMES
from opportune.sim.posterior import observable_probabilities
from opportune.sim.web import SimSession, generate
from opportune.sim.web_history import SimHistory, build_sim_examples
from opportune.workspace import load_workspace

START = 1_750_000_000_000
DAYS = 30
MIN_POSITIVE_VISITS = 200


def ruleset_of(workspace: Path | None) -> object:
    """The rules of ``workspace``, or of the demo workspace's pages, segments and outcomes
    (what the example site runs)."""
    if workspace is not None:
        return RuleBook(load_workspace(workspace)).ruleset
    folder = Path(tempfile.mkdtemp(prefix="opportune-bench-ws-"))
    for name in ("sites.yaml", "pages.yaml", "segments.yaml", "outcomes.yaml"):
        shutil.copy(EXAMPLE_WORKSPACE / name, folder / name)
    rules = RuleBook(load_workspace(folder))
    shutil.rmtree(folder)
    return rules.ruleset


def sessions_of(n: int, seed: int) -> Iterator[SimSession]:
    days = DAYS if n >= 3000 else 10
    return generate(seed, start_ms=START, days=days, visitors_per_day=max(1, n // days))


def fmt(v: float | None, nd: int = 3) -> str:
    return "  n/a" if v is None else f"{v:.{nd}f}"


def percentiles_us(samples: list[int]) -> tuple[float, float]:
    a = np.array(samples) / 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def evaluate(args: argparse.Namespace, rs: object, cfg: TrainingConfig) -> tuple[list, dict]:
    spec = spec_for(rs)  # type: ignore[arg-type]
    t = time.perf_counter()
    sessions = list(sessions_of(args.sessions, args.seed))
    sim_s = time.perf_counter() - t
    t = time.perf_counter()
    ex = build_sim_examples(
        sessions,
        rs,
        spec,
        workers=args.threads,
        progress=sys.stderr.isatty(),  # type: ignore[arg-type]
    )
    replay_s = time.perf_counter() - t
    truth = {session_id_for(s.visitor_id, s.visit_number): s.probabilities for s in sessions}
    t = time.perf_counter()
    seen = {
        session_id_for(s.visitor_id, s.visit_number): p
        for s, p in zip(sessions, observable_probabilities(sessions), strict=True)
    }
    print(f"observer's posterior of {len(seen)} visits in {time.perf_counter() - t:.1f} s")
    del sessions
    print(
        f"evaluation history: {len(ex.visit_ids)} visits, {len(ex)} events "
        f"(simulated in {sim_s:.1f} s; replayed in {replay_s:.1f} s by {args.threads} "
        f"workers: {replay_s / max(1, len(ex)) * 1e6:.0f} µs/event wall-clock)"
    )
    rows = []
    models = {}
    reg_dir = Path(tempfile.mkdtemp(prefix="opportune-bench-models-"))
    registry = ModelRegistry(reg_dir)
    for outcome in OUTCOMES:
        oe = ex.for_outcome(outcome)
        achieving = len(np.unique(oe.visit[oe.y > 0]))
        if achieving < MIN_POSITIVE_VISITS:
            print(f"{outcome}: only {achieving} visits achieve it; skipped")
            continue
        t = time.perf_counter()
        model = train_outcome_model(oe, cfg, progress=sys.stderr.isatty())
        fit_s = time.perf_counter() - t
        te = model.test
        k = OUTCOMES.index(outcome)
        oracle = np.array(
            [truth[te.visit_ids[v]][n - 1, k] for v, n in zip(te.visit, te.prefix, strict=True)]
        )
        observer = np.array(
            [seen[te.visit_ids[v]][n - 1, k] for v, n in zip(te.visit, te.prefix, strict=True)]
        )
        mine = summary(model.test_p, te.y)
        best = summary(oracle, te.y)
        ceiling = summary(observer, te.y)
        card = model.card
        model.card["activation"] = {"notWorse": True, "reason": "bench"}
        version = registry.save(outcome, model)
        registry.activate(outcome, version, by="rule")
        models[outcome] = registry.load_active(outcome)
        rows.append(
            {
                "outcome": outcome,
                "test_visits": te.visits,
                "test_prefixes": len(te),
                "rate": float(te.y.mean()),
                "auc": mine["rocAuc"],
                "oracle_auc": best["rocAuc"],
                "obs_auc": ceiling["rocAuc"],
                "obs_brier": ceiling["brier"],
                "obs_ece": ceiling["ece"],
                "obs_by_prefix": auc_by_prefix(observer, te.y, te.prefix),
                "pr_auc": mine["prAuc"],
                "oracle_pr_auc": best["prAuc"],
                "brier": mine["brier"],
                "oracle_brier": best["brier"],
                "ece": mine["ece"],
                "oracle_ece": best["ece"],
                "lr_auc": card["baselines"]["logisticRegression"]["rocAuc"],
                "lr_brier": card["baselines"]["logisticRegression"]["brier"],
                "lr_ece": card["baselines"]["logisticRegression"]["ece"],
                "base_brier": card["baselines"]["baseRate"]["brier"],
                "by_prefix": auc_by_prefix(model.test_p, te.y, te.prefix),
                "oracle_by_prefix": auc_by_prefix(oracle, te.y, te.prefix),
                "trees": card["model"]["trees"],
                "calibration": card["calibration"]["method"],
                "fit_s": fit_s,
                "X": te.X,
            }
        )
    shutil.rmtree(reg_dir)
    info = {"replay_s": replay_s, "events": len(ex), "ex": ex, "spec": spec}
    return rows, {**info, "models": models}


def scoring(rows: list, models: dict) -> dict:
    """p50/p99 of predict_one per outcome, and of the whole scorer hook per event."""
    out = {}
    rng = np.random.default_rng(0)
    for r in rows:
        m = models[r["outcome"]]
        X = r["X"]
        xs = X[rng.integers(0, len(X), 20_000)].tolist()
        for x in xs[:500]:
            m.predict_one(x)
        samples = []
        gc.disable()
        try:
            for x in xs:
                t = time.perf_counter_ns()
                m.predict_one(x)
                samples.append(time.perf_counter_ns() - t)
        finally:
            gc.enable()
        out[r["outcome"]] = percentiles_us(samples)
    return out


def hook_cost(rs: object, models: dict, n_sessions: int) -> tuple[float, float]:
    """What the pipeline's scorer hook costs per event: vector() once + every model."""
    from opportune.engine.scoring import OutcomeScorer

    scorer = OutcomeScorer(lambda: models)
    samples: list[int] = []

    def timed(journey, members, now):  # type: ignore[no-untyped-def]
        t = time.perf_counter_ns()
        scorer(journey, members, now)
        samples.append(time.perf_counter_ns() - t)

    sessions = list(sessions_of(n_sessions, 99))
    hist = SimHistory()
    gc.collect()
    gc.disable()  # as for predict_one: collector pauses belong to the whole process heap
    try:
        _replay_all(rs, sessions, hist, timed)
    finally:
        gc.enable()
    return percentiles_us(samples)


def _replay_all(rs: object, sessions: list[SimSession], hist: SimHistory, hook: object) -> None:
    for s in sessions:
        v = hist.visit(s)
        j = v.journey(rs.fingerprint)  # type: ignore[attr-defined]
        scratch = {k: list(a) for k, a in v.assignments.items()}
        for ev in v.events:
            rs.step(j, ev, max(j.last_at, ev.ts), scratch, hook)  # type: ignore[attr-defined]
        hist.settle(v, list(j.outcomes), scratch)


def training_time(args: argparse.Namespace, rs: object, cfg: TrainingConfig) -> dict:
    spec = spec_for(rs)  # type: ignore[arg-type]
    t = time.perf_counter()
    sessions = list(sessions_of(args.train_sessions, args.seed + 1))
    sim_s = time.perf_counter() - t
    t = time.perf_counter()
    ex = build_sim_examples(
        sessions,
        rs,
        spec,
        workers=args.threads,
        progress=sys.stderr.isatty(),  # type: ignore[arg-type]
    )
    replay_s = time.perf_counter() - t
    del sessions
    fits = {}
    for outcome in OUTCOMES:
        oe = ex.for_outcome(outcome)
        t = time.perf_counter()
        model = train_outcome_model(oe, cfg, progress=sys.stderr.isatty())
        fits[outcome] = (time.perf_counter() - t, model.card["trainingSeconds"])
    return {
        "visits": len(ex.visit_ids),
        "events": len(ex),
        "simulate_s": sim_s,
        "replay_s": replay_s,
        "fits": fits,
    }


def report_training(args: argparse.Namespace, tt: dict) -> str:
    """Print the training-time run; return its part of the README line."""
    fit_total = sum(s for s, _ in tt["fits"].values())
    one = max(s for s, _ in tt["fits"].values())
    total = tt["replay_s"] + fit_total
    print(
        f"training on {tt['visits']} visits ({tt['events']} events), {args.threads} "
        f"LightGBM threads and replay workers: replay {tt['replay_s']:.1f} s (simulation "
        f"{tt['simulate_s']:.1f} s not counted) + fit {fit_total:.1f} s for "
        f"{len(tt['fits'])} outcomes (slowest {one:.1f} s, baselines included) = {total:.1f} s"
    )
    for outcome, (secs, parts) in tt["fits"].items():
        print(f"  {outcome}: {secs:.1f} s ({parts})")
    return (
        f"; training {tt['visits']} visits {total:.0f} s for all outcomes "
        f"({tt['replay_s']:.0f} s replay + {one:.0f} s for the slowest outcome)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=50_000)
    ap.add_argument("--train-sessions", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2, help="LightGBM threads (<= 2 here)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="~1 minute: 8k and 10k visits")
    ap.add_argument(
        "--workspace", type=Path, help="Another workspace (e.g. with more segments as features)"
    )
    ap.add_argument("--no-training-time", action="store_true", help="Skip the timing run")
    ap.add_argument("--training-time-only", action="store_true", help="Only the training-time run")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.train_sessions = 8_000, 10_000
    cfg = TrainingConfig(num_threads=args.threads)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rs = ruleset_of(args.workspace)
    if args.training_time_only:
        report_training(args, training_time(args, rs, cfg))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        return
    rows, info = evaluate(args, rs, cfg)
    lat = scoring(rows, info["models"])
    hook = hook_cost(rs, info["models"], 300 if args.quick else 1000)
    del info["ex"]
    gc.collect()
    tt = None if args.no_training_time else training_time(args, rs, cfg)
    print()
    print("ceilings: 'seen' = the exact posterior given the events (the best a model can do);")
    print("'hidden' = the simulator's truth, which knows the intent (out of any model's reach)")
    head = (
        f"{'outcome':<19}{'rate':>7}{'AUC':>7}{'seen':>7}{'gap':>7}{'hidden':>8}"
        f"{'PR AUC':>8}{'hidden':>8}{'Brier':>8}{'seen':>8}{'hidden':>8}{'ECE':>7}{'seen':>7}"
        f"{'LR AUC':>8}{'LR ECE':>8}{'base Brier':>11}{'p50 µs':>8}{'p99 µs':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        p50, p99 = lat[r["outcome"]]
        print(
            f"{r['outcome']:<19}{r['rate']:>7.3f}{fmt(r['auc']):>7}{fmt(r['obs_auc']):>7}"
            f"{r['obs_auc'] - r['auc']:>7.3f}{fmt(r['oracle_auc']):>8}"
            f"{fmt(r['pr_auc']):>8}{fmt(r['oracle_pr_auc']):>8}"
            f"{fmt(r['brier'], 4):>8}{fmt(r['obs_brier'], 4):>8}{fmt(r['oracle_brier'], 4):>8}"
            f"{fmt(r['ece'], 4):>7}{fmt(r['obs_ece'], 4):>7}"
            f"{fmt(r['lr_auc']):>8}{fmt(r['lr_ece'], 4):>8}"
            f"{fmt(r['base_brier'], 4):>11}{p50:>8.1f}{p99:>8.1f}"
        )
    print()
    print("ROC AUC by prefix length (model / seen / hidden), test prefixes of exactly n events:")
    print(f"{'outcome':<19}" + "".join(f"{'after ' + str(n):>22}" for n in PREFIX_LENGTHS))
    for r in rows:
        cells = [
            f"{fmt(r['by_prefix'][str(n)])} / {fmt(r['obs_by_prefix'][str(n)])} / "
            f"{fmt(r['oracle_by_prefix'][str(n)])}"
            for n in PREFIX_LENGTHS
        ]
        print(f"{r['outcome']:<19}" + "".join(f"{c:>22}" for c in cells))
    print()
    for r in rows:
        print(
            f"{r['outcome']}: {r['test_visits']} test visits, {r['test_prefixes']} test prefixes; "
            f"{r['trees']} trees, {r['calibration']} calibration, trained in {r['fit_s']:.1f} s"
        )
    print(
        f"scorer hook per event (vector once + {len(rows)} models): p50 {hook[0]:.1f} µs, "
        f"p99 {hook[1]:.1f} µs"
    )
    worst_gap = max(r["obs_auc"] - r["auc"] for r in rows)
    worst_hidden = max(r["oracle_auc"] - r["auc"] for r in rows)
    worst_ece = max(r["ece"] for r in rows)
    worst_p99 = max(p99 for _, p99 in lat.values())
    training = "" if tt is None else report_training(args, tt)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(
        f"README: outcome models on {len(rows)} simulated outcomes ({args.sessions} visits): "
        f"ROC AUC {min(r['auc'] for r in rows):.3f}–{max(r['auc'] for r in rows):.3f} vs the "
        f"observer's ceiling {min(r['obs_auc'] for r in rows):.3f}–"
        f"{max(r['obs_auc'] for r in rows):.3f} (largest gap {worst_gap:.3f}) and the hidden "
        f"oracle's {min(r['oracle_auc'] for r in rows):.3f}–"
        f"{max(r['oracle_auc'] for r in rows):.3f} (gap ≤ {worst_hidden:.3f}), "
        f"ECE ≤ {worst_ece:.4f}{training}; scoring p99 "
        f"{worst_p99:.0f} µs per outcome per event"
    )


if __name__ == "__main__":
    main()
