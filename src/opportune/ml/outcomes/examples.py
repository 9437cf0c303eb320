"""Training examples: every past visit replayed through the live rules step, one example per
event prefix, its features recorded at the very hook where serving scores.

A visit is replayed with :meth:`Ruleset.step` and a recording scorer that calls
:func:`~opportune.ml.outcomes.features.vector` — the pipeline's scorer hook, after the fold and
before the rules — so a prefix's features in training are what serving computes at that
moment (no train/serve skew by construction; ``tests/ml/outcomes/test_model.py`` checks it
against the live pipeline). One replay serves every outcome: per outcome, the label of a
prefix is "achieved at a later event of the same visit", and prefixes at or after the
achieving event are left out (the outcome is known by then; serving stops scoring it).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import struct
import tempfile
import traceback
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from rich.progress import Progress

from opportune.core.assignments import merge_assignments
from opportune.core.journey import Journey
from opportune.core.rules import Ruleset
from opportune.ml.outcomes.features import FeatureSpec, vector
from opportune.ml.outcomes.visits import Settle, Visit, VisitHistory, VisitSource


@dataclass(slots=True)
class OutcomeExamples:
    """The examples of one outcome: features, label, weight and where each comes from.

    ``weight`` is 1 / (examples of the same visit), so every visit counts once in training
    however long it is; ``prefix`` is the number of events seen (1: after the first);
    ``started`` the visit's start (ms) — the time split is by visit, never inside one.
    ``rows`` are the examples' rows in ``source`` (the replay they come from): the
    features stay in the replay's matrices, and ``X`` gathers them on first use, so an
    outcome and its slices cost no copy of a gigabyte-sized matrix until a slice is
    actually scored. Treat ``X`` as read-only.
    """

    outcome: str
    spec: FeatureSpec
    y: np.ndarray
    weight: np.ndarray
    visit: np.ndarray  # index into visit_ids
    started: np.ndarray
    prefix: np.ndarray
    visit_ids: list[str]
    rows: np.ndarray
    source: Examples = field(repr=False)
    _X: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def visits(self) -> int:
        return len(np.unique(self.visit))

    @property
    def X(self) -> np.ndarray:
        """The features in ``spec``'s layout, one row per example."""
        if self._X is None:
            self._X = self.source.X[self.rows]
        return self._X

    def subset(self, mask: np.ndarray) -> OutcomeExamples:
        """The examples where ``mask`` holds (weights kept as they are)."""
        return OutcomeExamples(
            self.outcome,
            self.spec,
            self.y[mask],
            self.weight[mask],
            self.visit[mask],
            self.started[mask],
            self.prefix[mask],
            self.visit_ids,
            self.rows[mask],
            self.source,
        )

    def features(self, spec: FeatureSpec) -> np.ndarray:
        """The matrix in ``spec``'s layout (the model's own, or another recorded one);
        ``KeyError`` if the replay did not record that layout."""
        if spec == self.spec:
            return self.X
        if spec not in self.source.specs:
            raise KeyError(spec)
        return self.source.matrices[self.source.specs.index(spec)][self.rows]


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
    # What is derived from the matrices once and shared by every outcome trained from them
    # (the binned LightGBM dataset, ``outcome_model``), filled on first use.
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def spec(self) -> FeatureSpec:
        return self.specs[0]

    @property
    def X(self) -> np.ndarray:
        return self.matrices[0]

    def __len__(self) -> int:
        return len(self.visit)

    def for_outcome(self, outcome: str) -> OutcomeExamples:
        """The examples of ``outcome``: prefixes before its achievement, labelled.

        One visit of three events, achieving ``signup`` at its second: only the first
        prefix is an example (labelled 1); afterwards the outcome is known.

        >>> spec = FeatureSpec()
        >>> ex = Examples((spec,), [np.zeros((3, len(spec.names)))], np.array([0, 0, 0]),
        ...               np.array([1, 2, 3]), ["s1"], np.array([0]), {"signup": np.array([1])})
        >>> o = ex.for_outcome("signup")
        >>> o.y.tolist(), o.prefix.tolist(), o.weight.tolist()
        ([1.0], [1], [1.0])
        """
        at = self.achieved[outcome][self.visit]
        rows = np.flatnonzero((at < 0) | (self.prefix - 1 < at))
        visit = self.visit[rows]
        counts = np.bincount(visit, minlength=len(self.visit_ids))
        return OutcomeExamples(
            outcome,
            self.spec,
            (at[rows] >= 0).astype(np.float64),
            1.0 / counts[visit],
            visit,
            self.visit_started[visit],
            self.prefix[rows],
            self.visit_ids,
            rows,
            self,
        )


class _Recorder:
    """The scorer hook of training: writes each prefix's feature vector to one sink per
    layout, as packed float64s.

    ``struct`` packs the list ``vector`` returns in ~2 µs; ``array.extend`` took ~7 µs
    (it converts and resizes item by item).
    """

    __slots__ = ("n", "specs", "writers")

    def __init__(self, specs: Sequence[FeatureSpec], sinks: Sequence[IO[bytes]]) -> None:
        self.specs = specs
        self.writers = [
            (struct.Struct(f"{len(spec.names)}d").pack, sink.write)
            for spec, sink in zip(specs, sinks, strict=True)
        ]
        self.n = 0

    def __call__(self, journey: Journey, members: Mapping[str, int], now: int) -> None:
        for spec, (pack, write) in zip(self.specs, self.writers, strict=True):
            write(pack(*vector(journey, members, now, spec)))
        self.n += 1


@dataclass(slots=True)
class _Replayed:
    """What a replay knows besides the feature matrices (which went to its sinks)."""

    rows: int
    visit: np.ndarray
    prefix: np.ndarray
    visit_ids: list[str]
    visit_started: np.ndarray
    achieved: dict[str, np.ndarray]


def _replay(
    visits: Iterable[Visit],
    ruleset: Ruleset,
    specs: Sequence[FeatureSpec],
    sinks: Sequence[IO[bytes]],
    *,
    settle: Settle | None = None,
    progress: bool = False,
    total: int | None = None,
    tick: Callable[[int], None] | None = None,
) -> _Replayed:
    rec = _Recorder(specs, sinks)
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
    return _Replayed(
        rec.n,
        np.frombuffer(visit_idx, dtype=np.int32).astype(np.int64),
        np.frombuffer(prefix, dtype=np.int32).astype(np.int64),
        ids,
        np.frombuffer(started, dtype=np.int64).copy(),
        {o: np.frombuffer(a, dtype=np.int32).astype(np.int64) for o, a in achieved.items()},
    )


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
    with contextlib.ExitStack() as stack:
        files = _scratch_files(stack, len(specs))
        done = _replay(
            visits,
            ruleset,
            specs,
            files,
            settle=settle,
            progress=progress,
            total=total,
            tick=tick,
        )
        return _assemble(specs, [done], [files])


def _scratch_files(stack: contextlib.ExitStack, n: int) -> list[IO[bytes]]:
    """``n`` unlinked temporary files for feature rows (in ``TMPDIR``; the page cache
    holds them: on 100k visits a replay through /dev/shm was no faster than through a
    disk-backed /tmp).

    Rows go to a file rather than a growing buffer, and a forked worker's file is read by
    the parent straight into its place in the matrix: pickling each worker's ~600 MB
    through a pipe, unpickling and concatenating cost ~10 s of a 51 s replay of 100k
    visits. On 40k visits with 2 workers the replay went from 13.4 to 10.8 s (24.2 to
    18.8 s of CPU).
    """
    return [stack.enter_context(tempfile.TemporaryFile(buffering=1 << 20)) for _ in range(n)]


def _read_into(f: IO[bytes], out: np.ndarray) -> None:
    f.flush()
    f.seek(0)
    view = memoryview(out).cast("B") if out.size else memoryview(b"")
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise RuntimeError(f"a replay wrote {got} bytes of rows, {len(view)} expected")
        got += n
    if f.read(1):
        raise RuntimeError("a replay wrote more rows than it counted")


def _assemble(
    specs: Sequence[FeatureSpec],
    parts: Sequence[_Replayed],
    files: Sequence[Sequence[IO[bytes]]],
) -> Examples:
    """The examples of replays of disjoint sets of visits, whose rows are in ``files``
    (per replay, one per layout), as one (visit indices renumbered)."""
    offsets = np.cumsum([0, *(p.rows for p in parts)])
    matrices = []
    for i, spec in enumerate(specs):
        m = np.empty((int(offsets[-1]), len(spec.names)), dtype=np.float64)
        for k, per_part in enumerate(files):
            _read_into(per_part[i], m[offsets[k] : offsets[k + 1]])
        matrices.append(m)
    visit_offsets = np.cumsum([0, *(len(p.visit_ids) for p in parts[:-1])])
    return Examples(
        tuple(specs),
        matrices,
        np.concatenate([p.visit + o for p, o in zip(parts, visit_offsets, strict=True)]),
        np.concatenate([p.prefix for p in parts]),
        [sid for p in parts for sid in p.visit_ids],
        np.concatenate([p.visit_started for p in parts]),
        {o: np.concatenate([p.achieved[o] for p in parts]) for o in parts[0].achieved},
    )


def _child(
    source: VisitSource,
    k: int,
    n: int,
    ruleset: Ruleset,
    specs: Sequence[FeatureSpec],
    files: Sequence[IO[bytes]],
    ticks: Any,
    out: Any,
) -> None:
    try:
        visits, settle = source(k, n)
        # The files are the parent's, inherited with the fork: written here, read there.
        done = _replay(visits, ruleset, specs, files, settle=settle, tick=ticks.put)
        for f in files:
            f.flush()
        out.send(("ok", done))
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
    where ``fork`` is not available, or with one worker, the replay runs here. A worker
    writes its feature rows to a temporary file the parent opened, and sends back only
    the rest.
    """
    if not specs:
        raise ValueError("at least one feature layout is needed")
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        visits, settle = source(0, 1)
        return examples_from_visits(
            visits, ruleset, specs, settle=settle, progress=progress, total=total
        )
    ctx = mp.get_context("fork")
    ticks = ctx.SimpleQueue()
    procs, pipes = [], []
    with contextlib.ExitStack() as stack:
        files = [_scratch_files(stack, len(specs)) for _ in range(workers)]
        for k in range(workers):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_child,
                args=(source, k, workers, ruleset, specs, files[k], ticks, send),
                daemon=True,
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
                                results[k] = (
                                    "error",
                                    f"worker {k} died (exit {procs[k].exitcode})",
                                )
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
        return _assemble(specs, [results[k][1] for k in range(workers)], files)


def build_examples(
    history: VisitHistory,
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
    """Examples from the ``history``'s visits that started since ``since_ms`` and ended
    before ``until_ms`` (give ``now`` minus the session timeout, so labels are final)."""
    total = history.visit_count(since_ms=since_ms, until_ms=until_ms, site_id=site_id)
    source = history.source(since_ms=since_ms, until_ms=until_ms, site_id=site_id)
    return replay_in_workers(
        source, ruleset, [spec, *extra_specs], workers=workers, progress=progress, total=total
    )
