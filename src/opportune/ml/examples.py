"""Training examples: every past visit replayed through the live rules step, one example per
event prefix, its features recorded at the very hook where serving scores.

A visit is replayed with :meth:`Ruleset.step` and a recording scorer that calls
:func:`~opportune.ml.features.vector` — the pipeline's scorer hook, after the fold and
before the rules — so a prefix's features in training are what serving computes at that
moment (no train/serve skew by construction; ``tests/ml/test_outcome_model.py`` checks it
against the live pipeline). One replay serves every outcome: per outcome, the label of a
prefix is "achieved at a later event of the same visit", and prefixes at or after the
achieving event are left out (the outcome is known by then; serving stops scoring it).
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.progress import Progress
from sqlalchemy import Engine

from opportune.core.journey import Journey
from opportune.core.rules import Ruleset
from opportune.ml.features import FeatureSpec, vector
from opportune.ml.history import (
    SimHistory,
    Visit,
    merge_assignments,
    stored_visit_count,
    stored_visits,
)
from opportune.sim.web import SimSession
from opportune.store.db import make_engine

Settle = Callable[[Visit, Sequence[str], dict[str, list[int]]], None]


def spec_for(ruleset: Ruleset) -> FeatureSpec:
    """The feature layout for a workspace's rules: its page groups, outcomes and segments,
    sorted by name so that the layout does not change when documents are reordered."""
    groups = sorted(ruleset.pages.groups, key=lambda g: g.name)
    return FeatureSpec(
        tuple(g.name for g in groups),
        tuple(sorted(ruleset.outcome_by_name)),
        tuple(sorted(ruleset.segment_by_name)),
        tuple(tuple(g.urls) for g in groups),
    )


@dataclass(slots=True)
class OutcomeExamples:
    """The examples of one outcome: features, label, weight and where each comes from.

    ``weight`` is 1 / (examples of the same visit), so every visit counts once in training
    however long it is; ``prefix`` is the number of events seen (1: after the first);
    ``started`` the visit's start (ms) — the time split is by visit, never inside one.
    """

    outcome: str
    spec: FeatureSpec
    X: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    visit: np.ndarray  # index into visit_ids
    started: np.ndarray
    prefix: np.ndarray
    visit_ids: list[str]
    extra: dict[FeatureSpec, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def visits(self) -> int:
        return len(np.unique(self.visit))

    def subset(self, mask: np.ndarray) -> OutcomeExamples:
        """The examples where ``mask`` holds (weights kept as they are)."""
        return OutcomeExamples(
            self.outcome,
            self.spec,
            self.X[mask],
            self.y[mask],
            self.weight[mask],
            self.visit[mask],
            self.started[mask],
            self.prefix[mask],
            self.visit_ids,
            {s: m[mask] for s, m in self.extra.items()},
        )

    def features(self, spec: FeatureSpec) -> np.ndarray:
        """The matrix in ``spec``'s layout (the model's own, or another recorded one)."""
        if spec == self.spec:
            return self.X
        return self.extra[spec]


@dataclass(slots=True)
class Examples:
    """Every prefix of every replayed visit, once, for all outcomes of the rules."""

    specs: tuple[FeatureSpec, ...]
    matrices: list[np.ndarray]
    visit: np.ndarray
    prefix: np.ndarray
    visit_ids: list[str]
    visit_started: np.ndarray
    achieved: dict[str, np.ndarray]  # outcome -> per visit, event index achieving it, or -1

    @property
    def spec(self) -> FeatureSpec:
        return self.specs[0]

    @property
    def X(self) -> np.ndarray:
        return self.matrices[0]

    def __len__(self) -> int:
        return len(self.visit)

    def for_outcome(self, outcome: str) -> OutcomeExamples:
        """The examples of ``outcome``: prefixes before its achievement, labelled."""
        at = self.achieved[outcome][self.visit]
        keep = (at < 0) | (self.prefix - 1 < at)
        visit = self.visit[keep]
        counts = np.bincount(visit, minlength=len(self.visit_ids))
        return OutcomeExamples(
            outcome,
            self.spec,
            self.X[keep],
            (at[keep] >= 0).astype(np.float64),
            1.0 / counts[visit],
            visit,
            self.visit_started[visit],
            self.prefix[keep],
            self.visit_ids,
            {s: m[keep] for s, m in zip(self.specs[1:], self.matrices[1:], strict=True)},
        )


class _Recorder:
    """The scorer hook of training: appends each prefix's feature vector per layout."""

    __slots__ = ("buffers", "n", "specs")

    def __init__(self, specs: Sequence[FeatureSpec]) -> None:
        self.specs = specs
        self.buffers = [array("d") for _ in specs]
        self.n = 0

    def __call__(self, journey: Journey, members: Mapping[str, int], now: int) -> None:
        for spec, buf in zip(self.specs, self.buffers, strict=True):
            buf.extend(vector(journey, members, now, spec))
        self.n += 1


def examples_from_visits(
    visits: Iterable[Visit],
    ruleset: Ruleset,
    specs: Sequence[FeatureSpec],
    *,
    settle: Settle | None = None,
    progress: bool = False,
    total: int | None = None,
    tick: Callable[[int], None] | None = None,
) -> Examples:
    """Replay ``visits`` through ``ruleset`` and record every prefix in each of ``specs``.

    ``settle`` (if given) hears, after each visit, the outcomes it achieved and the
    assignments after it — what a live visitor state carries into its next visit.
    ``tick`` hears the number of visits done now and then (a worker's progress).
    """
    if not specs:
        raise ValueError("at least one feature layout is needed")
    rec = _Recorder(specs)
    visit_idx = array("i")
    prefix = array("i")
    ids: list[str] = []
    started = array("q")
    names = sorted(ruleset.outcome_by_name)
    achieved: dict[str, array[int]] = {o: array("i") for o in names}
    fingerprint = ruleset.fingerprint
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("replaying visits", total=total)
        for v in visits:
            j = v.journey(fingerprint)
            scratch = {k: list(a) for k, a in v.assignments.items()}
            won: dict[str, int] = {}
            k = len(ids)
            before = rec.n
            merges = dict(v.merges)
            for i, ev in enumerate(v.events):
                more = merges.get(i)
                if more is not None:
                    merge_assignments(scratch, more)
                    j.facts["identified"] = True
                changes = ruleset.step(j, ev, max(j.last_at, ev.ts), scratch, rec)
                for name, _at, _value in changes.achieved:
                    won[name] = i
            n = rec.n - before
            visit_idx.extend([k] * n)
            prefix.extend(range(1, n + 1))
            ids.append(v.session_id)
            started.append(v.started_at)
            for name in names:
                achieved[name].append(won.get(name, -1))
            if settle is not None:
                settle(v, list(j.outcomes), scratch)
            bar.advance(task)
            if tick is not None and len(ids) % 256 == 0:
                tick(256)
    matrices = [
        np.frombuffer(buf, dtype=np.float64).reshape(-1, len(spec.names))
        if len(buf)
        else np.zeros((0, len(spec.names)))
        for spec, buf in zip(specs, rec.buffers, strict=True)
    ]
    return Examples(
        tuple(specs),
        matrices,
        np.frombuffer(visit_idx, dtype=np.int32).astype(np.int64),
        np.frombuffer(prefix, dtype=np.int32).astype(np.int64),
        ids,
        np.frombuffer(started, dtype=np.int64).copy(),
        {o: np.frombuffer(a, dtype=np.int32).astype(np.int64) for o, a in achieved.items()},
    )


def concat(parts: Sequence[Examples]) -> Examples:
    """Examples of disjoint sets of visits as one (visit indices renumbered)."""
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0, *(len(p.visit_ids) for p in parts[:-1])])
    return Examples(
        parts[0].specs,
        [np.concatenate([p.matrices[i] for p in parts]) for i in range(len(parts[0].specs))],
        np.concatenate([p.visit + o for p, o in zip(parts, offsets, strict=True)]),
        np.concatenate([p.prefix for p in parts]),
        [sid for p in parts for sid in p.visit_ids],
        np.concatenate([p.visit_started for p in parts]),
        {o: np.concatenate([p.achieved[o] for p in parts]) for o in parts[0].achieved},
    )


# A worker's visits (and what carries state between them), given (worker, workers).
VisitSource = Callable[[int, int], tuple[Iterable[Visit], Settle | None]]


def _child(
    source: VisitSource,
    k: int,
    n: int,
    ruleset: Ruleset,
    specs: Sequence[FeatureSpec],
    ticks: Any,
    out: Any,
) -> None:
    try:
        visits, settle = source(k, n)
        ex = examples_from_visits(visits, ruleset, specs, settle=settle, tick=ticks.put)
        out.send(("ok", ex))
    except BaseException as exc:  # the parent reports it; a worker never hangs it
        out.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        out.close()


def replay_in_workers(
    source: VisitSource,
    ruleset: Ruleset,
    specs: Sequence[FeatureSpec],
    *,
    workers: int,
    progress: bool = False,
    total: int | None = None,
) -> Examples:
    """Replay in ``workers`` forked processes, each its share of the visits (the replay is
    pure Python: one process per core is how a 2-core machine replays twice as fast).

    Workers are forked, so the rules and any in-memory history are shared, not pickled;
    where ``fork`` is not available, or with one worker, the replay runs here.
    """
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        visits, settle = source(0, 1)
        return examples_from_visits(
            visits, ruleset, specs, settle=settle, progress=progress, total=total
        )
    ctx = mp.get_context("fork")
    ticks = ctx.SimpleQueue()
    procs, pipes = [], []
    for k in range(workers):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_child, args=(source, k, workers, ruleset, specs, ticks, send), daemon=True
        )
        proc.start()
        send.close()
        procs.append(proc)
        pipes.append(recv)
    results: dict[int, tuple[str, Any]] = {}
    try:
        with Progress(transient=True, disable=not progress) as bar:
            task = bar.add_task(f"replaying visits ({workers} workers)", total=total)
            while len(results) < workers:
                for k, pipe in enumerate(pipes):
                    if k not in results and pipe.poll(0.05):
                        try:
                            results[k] = pipe.recv()
                        except EOFError:
                            results[k] = ("error", f"worker {k} died (exit {procs[k].exitcode})")
                while not ticks.empty():
                    bar.advance(task, ticks.get())
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    errors = [msg for status, msg in results.values() if status != "ok"]
    if errors:
        raise RuntimeError("replay failed in a worker: " + errors[0])
    return concat([results[k][1] for k in range(workers)])


def build_examples(
    engine: Engine,
    ruleset: Ruleset,
    spec: FeatureSpec,
    *,
    since_ms: int,
    until_ms: int,
    site_id: str | None = None,
    extra_specs: Sequence[FeatureSpec] = (),
    workers: int = 1,
    progress: bool = False,
) -> Examples:
    """Examples from the stored visits that started since ``since_ms`` and ended before
    ``until_ms`` (give ``now`` minus the session timeout, so labels are final).

    With ``workers`` > 1 each worker opens its own connection and reads its share."""
    with engine.connect() as conn:
        total = stored_visit_count(conn, since_ms=since_ms, until_ms=until_ms, site_id=site_id)
    url = engine.url.render_as_string(hide_password=False)

    def source(k: int, n: int) -> tuple[Iterable[Visit], Settle | None]:
        def visits() -> Iterator[Visit]:
            eng = engine if n == 1 else make_engine(url)
            try:
                with eng.connect() as conn:
                    yield from stored_visits(
                        conn,
                        since_ms=since_ms,
                        until_ms=until_ms,
                        site_id=site_id,
                        partition=(k, n),
                    )
            finally:
                if eng is not engine:
                    eng.dispose()

        return visits(), None

    return replay_in_workers(
        source, ruleset, [spec, *extra_specs], workers=workers, progress=progress, total=total
    )


def customer_groups(sessions: Sequence[SimSession]) -> list[int]:
    """For each session, a group number such that visitors sharing a customer (an email,
    e.g. on a second device) share a group: what a worker must see together."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s in sessions:
        if s.email:
            a, b = find(s.visitor_id), find("email:" + s.email)
            if a != b:
                parent[a] = b
    return [zlib.crc32(find(s.visitor_id).encode()) for s in sessions]


def build_sim_examples(
    sessions: Iterable[SimSession],
    ruleset: Ruleset,
    spec: FeatureSpec,
    *,
    history: SimHistory | None = None,
    extra_specs: Sequence[FeatureSpec] = (),
    workers: int = 1,
    progress: bool = False,
    total: int | None = None,
) -> Examples:
    """Examples from simulated sessions (in start order), converted as the engine would
    ingest them and replayed by the same code as stored visits.

    With ``workers`` > 1 (``sessions`` then held in memory), each worker replays the
    visitors of its customer groups, with its own :class:`SimHistory`."""
    if workers <= 1:
        hist = history or SimHistory()
        return examples_from_visits(
            hist.visits(sessions),
            ruleset,
            [spec, *extra_specs],
            settle=hist.settle,
            progress=progress,
            total=total,
        )
    held = list(sessions)
    groups = customer_groups(held)

    def source(k: int, n: int) -> tuple[Iterable[Visit], Settle | None]:
        hist = SimHistory()
        mine = (s for s, g in zip(held, groups, strict=True) if g % n == k)
        return hist.visits(mine), hist.settle

    return replay_in_workers(
        source,
        ruleset,
        [spec, *extra_specs],
        workers=workers,
        progress=progress,
        total=len(held),
    )
