"""Predictive routing on the contact-center simulator: how much of the oracle's uplift a
learnt policy captures, in two kinds of world and at two loads, and what it costs in speed
of answer.

Per seed and kind of world — ``bilinear`` (agent skill plus a smooth match of customer
features × agent vector) and ``specialist`` (agents sharply good at some intents, with
high-value customers or as native speakers, weak elsewhere) — one center; 40 days of
history under longest idle (load 0.7); the KPI model (sales conversion) fitted by the
server's rule (``agent_model="auto"``: pooled ridge and agent-id trees, the better on the
newest 20% served) and, for comparison, the model before shape terms (intercept and slopes
per agent); then the same fresh calls (common random numbers) routed by each policy at
loads 0.7 and 0.95 (staffed for that occupancy). "true p" rows are the same policies given
the true probabilities, so a policy's loss and the model's loss read apart; the oracle is
the joint assignment on the true probabilities.

KPI is the expected sales per offered call (the true probability of each pair made; an
abandoned call sells nothing). "of oracle" is (policy − longest idle) / (oracle − longest
idle), from the means over seeds; ASA is the mean wait of answered calls and "ASA/LI" its
ratio to longest idle's (the aim: within 10%); SL is answered within 20 s.

    python bench/routing.py            # 3 seeds, 40 days of history, 2 days per policy
    python bench/routing.py --quick    # 1 seed, 10 days of history, 1 day per policy
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from opportune.core.routing import PredictiveSettings
from opportune.ml.routing.model import RoutingModel, TrainingSet
from opportune.sim.center import Arrival, Center, config
from opportune.sim.contact_center import Policy, oracle_scorer, simulate, training_set

KINDS = ("bilinear", "specialist")
LOADS = (0.7, 0.95)
HISTORY_LOAD = 0.7
POLICIES = (
    "longest idle",
    "greedy, anchor hold",
    "greedy, no hold",
    "greedy",
    "assignment, slopes model",
    "assignment",
    "greedy, true p",
    "oracle (assignment, true p)",
)


def model_scorer(
    model: RoutingModel, center: Center
) -> Callable[[Arrival, Sequence[str]], np.ndarray]:
    def score(arrival: Arrival, agent_ids: Sequence[str]) -> np.ndarray:
        pair = center.pair(arrival.language, agent_ids)
        return model.predict(arrival.x, agent_ids, Center.context(arrival), pair)

    return score


def ranking(model: RoutingModel, center: Center, stream: Sequence[Arrival]) -> tuple[float, float]:
    """Per customer, the correlation of predicted and true probabilities across agents, and
    how often the model's top agent is the true top agent (means over ``stream``)."""
    corr, top = [], []
    ids = center.agent_ids
    for a in stream[:300]:
        pred = model.predict(a.x, ids, Center.context(a), center.pair(a.language, ids))
        truth = center.true_p(a.x, a.language)
        corr.append(np.corrcoef(pred, truth)[0, 1])
        top.append(float(np.argmax(pred) == np.argmax(truth)))
    return float(np.mean(corr)), float(np.mean(top))


def scoring_ms(model: RoutingModel, center: Center, arrival: Arrival, agents: int = 50) -> float:
    """Milliseconds to score ``agents`` agents for one interaction (median of 200 calls)."""
    ids = [center.agent_ids[k % len(center.agent_ids)] for k in range(agents)]
    pair = center.pair(arrival.language, ids)
    model.predict(arrival.x, ids, Center.context(arrival), pair)  # the agents' block cached
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        model.predict(arrival.x, ids, Center.context(arrival), pair)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def policies(center: Center, model: RoutingModel, before: RoutingModel) -> list[tuple[str, Policy]]:
    # reserve_weight as the workspace's default (PredictiveDoc).
    on = PredictiveSettings(enabled=True, kpi_name="sales conversion", reserve_weight=0.01)
    learnt, slopes, truth = (
        model_scorer(model, center),
        model_scorer(before, center),
        oracle_scorer(center),
    )
    q = center.queue
    return [
        ("longest idle", Policy("li", "standard", q())),
        (
            "greedy, anchor hold",
            Policy("g-anchor", "greedy", q(predictive=replace(on, hold_rule="anchor")), learnt),
        ),
        (
            "greedy, no hold",
            Policy("g0", "greedy", q(predictive=replace(on, hold_for_better=False)), learnt),
        ),
        ("greedy", Policy("g", "greedy", q(predictive=on), learnt)),
        ("assignment, slopes model", Policy("a-slopes", "assignment", q(predictive=on), slopes)),
        ("assignment", Policy("a", "assignment", q(predictive=on), learnt)),
        ("greedy, true p", Policy("g-true", "greedy", q(predictive=on), truth)),
        ("oracle (assignment, true p)", Policy("oracle", "assignment", q(predictive=on), truth)),
    ]


def run(kind: str, seed: int, history_days: int, eval_days: int) -> tuple[dict, dict]:
    train_center = Center(config(kind, HISTORY_LOAD), seed=seed)
    history = simulate(
        train_center,
        train_center.arrivals(days=history_days, seed=seed),
        Policy("li", "standard", train_center.queue()),
    )
    data: TrainingSet = training_set(history, train_center)
    features = train_center.agent_features()
    started = time.perf_counter()
    model = RoutingModel.fit(data, agent_features=features, seed=seed)
    fit_s = time.perf_counter() - started
    before = RoutingModel.fit(
        data, agent_features=features, agent_model="ridge", shape=False, seed=seed
    )
    probe = train_center.arrivals(days=1, first_day=5000, seed=seed + 7)
    rank, top = ranking(model, train_center, probe)
    rank0, top0 = ranking(before, train_center, probe)
    choice = model.card["choice"]
    diag = {
        "rows": len(data),
        "chosen": choice["chosen"],
        "loss_ridge": choice["holdout_log_loss"]["ridge"],
        "loss_trees": choice["holdout_log_loss"]["trees"],
        "auc": model.card["holdout"]["auc"],
        "auc_before": before.card["holdout"]["auc"],
        "rank": rank,
        "top": top,
        "rank_before": rank0,
        "top_before": top0,
        "fit_s": fit_s,
        "ms50": scoring_ms(model, train_center, probe[0]),
    }
    metrics: dict[tuple[float, str], dict[str, float]] = {}
    for load in LOADS:
        center = Center(config(kind, load), seed=seed)  # the same agents and truth
        stream = center.arrivals(days=eval_days, first_day=1000, seed=seed + 1000)
        for name, policy in policies(center, model, before):
            metrics[(load, name)] = simulate(center, stream, policy, seed=seed).metrics()
    return diag, metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, short history")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--history-days", type=int, default=None)
    ap.add_argument("--eval-days", type=int, default=None)
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args()
    seeds = list(range(1, 1 + (args.seeds or (1 if args.quick else 3))))
    history_days, eval_days = (10, 1) if args.quick else (40, 2)
    history_days = args.history_days or history_days
    eval_days = args.eval_days or eval_days
    kinds = [k for k in args.kinds.split(",") if k]
    started = time.perf_counter()
    diags: dict[str, list[dict]] = defaultdict(list)
    runs: dict[str, list[dict]] = defaultdict(list)
    for kind in kinds:
        for seed in seeds:
            diag, metrics = run(kind, seed, history_days, eval_days)
            diags[kind].append(diag)
            runs[kind].append(metrics)
            print(f"{kind} seed {seed} done at {time.perf_counter() - started:.0f} s", flush=True)

    print(f"\nKPI model (sales conversion), {history_days} days of longest-idle history")
    print(
        f"{'world':<11}{'seed':>4}  {'rows':>6}  {'chosen':<6} {'ll ridge':>8} {'ll trees':>8}"
        f"  {'AUC':>5} {'(before)':>8}  {'rank corr':>9} {'(before)':>8}  {'top agent':>9}"
        f" {'(before)':>8}  {'fit s':>5}  {'ms/50':>5}"
    )
    for kind in kinds:
        for seed, d in zip(seeds, diags[kind], strict=True):
            print(
                f"{kind:<11}{seed:>4}  {d['rows']:>6}  {d['chosen']:<6} {d['loss_ridge']:>8.4f} "
                f"{d['loss_trees']:>8.4f}  {d['auc']:>5.3f} {d['auc_before']:>8.3f}  "
                f"{d['rank']:>9.3f} {d['rank_before']:>8.3f}  {100 * d['top']:>8.0f}% "
                f"{100 * d['top_before']:>7.0f}%  {d['fit_s']:>5.1f}  {d['ms50']:>5.2f}"
            )

    print(f"\nRouting, {len(seeds)} seed(s) × {eval_days} day(s) of calls per policy and load")
    header = (
        f"{'world':<11}{'load':>5} {'policy':<28} {'KPI':>6} {'uplift':>8} {'of oracle':>9} "
        f"{'ASA s':>6} {'ASA/LI':>6} {'SL20':>6} {'aband':>6} {'pred':>5}"
    )
    print(header)
    print("-" * len(header))
    summary: dict[tuple[str, float, str], tuple[float, float]] = {}
    for kind in kinds:
        for load in LOADS:
            mean: dict[str, dict[str, float]] = defaultdict(dict)
            for name in POLICIES:
                for k in runs[kind][0][(load, name)]:
                    mean[name][k] = float(np.mean([r[(load, name)][k] for r in runs[kind]]))
            base, best = mean["longest idle"], mean["oracle (assignment, true p)"]
            for name in POLICIES:
                m = mean[name]
                uplift = m["kpi"] - base["kpi"]
                share = uplift / (best["kpi"] - base["kpi"])
                asa = m["asa_s"] / base["asa_s"] if base["asa_s"] else float("nan")
                summary[(kind, load, name)] = (share, asa)
                print(
                    f"{kind:<11}{load:>5.2f} {name:<28} {m['kpi']:>6.4f} {100 * uplift:>+6.2f}pp "
                    f"{100 * share:>8.0f}% {m['asa_s']:>6.2f} {asa:>6.2f} "
                    f"{100 * m['service_level']:>5.1f}% {100 * m['abandonment']:>5.1f}% "
                    f"{100 * m['predictive_share']:>4.0f}%"
                )
            print()
    print("pred: share of answered calls routed by the predictive method (not standard/fallback)")
    print("\nPer seed (min–max over seeds): share of the oracle's uplift, ASA/LI")
    for kind in kinds:
        for load in LOADS:
            cells = []
            for name in ("assignment", "greedy", "greedy, true p"):
                shares, asas = [], []
                for r in runs[kind]:
                    li, oracle = r[(load, "longest idle")], r[(load, "oracle (assignment, true p)")]
                    m = r[(load, name)]
                    shares.append((m["kpi"] - li["kpi"]) / (oracle["kpi"] - li["kpi"]))
                    asas.append(m["asa_s"] / li["asa_s"] if li["asa_s"] else float("nan"))
                cells.append(
                    f"{name} {100 * min(shares):.0f}–{100 * max(shares):.0f}%, "
                    f"ASA ×{min(asas):.2f}–{max(asas):.2f}"
                )
            print(f"{kind:<11}{load:>5.2f}  " + "; ".join(cells))
    print(f"total {time.perf_counter() - started:.0f} s")
    parts = [
        f"{kind} {load}: {100 * summary[(kind, load, 'assignment')][0]:.0f}% "
        f"(ASA ×{summary[(kind, load, 'assignment')][1]:.2f}; greedy "
        f"{100 * summary[(kind, load, 'greedy')][0]:.0f}%, ASA ×"
        f"{summary[(kind, load, 'greedy')][1]:.2f})"
        for kind in kinds
        for load in LOADS
    ]
    print(
        "README: share of the oracle's uplift over longest idle captured by the learnt joint "
        "assignment — " + "; ".join(parts) + f" ({len(seeds)} seed(s))"
    )


if __name__ == "__main__":
    main()
