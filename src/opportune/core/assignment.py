"""Predictive routing by joint assignment: waiting interactions × free agent slots.

Matched jointly (``scipy.optimize.linear_sum_assignment``), so that when interactions
queue, a freed agent takes the interaction it is best for and several free agents split
several waiting interactions to the best total. The scores, posteriors and the explanation
of a choice are those of :mod:`opportune.core.predictive`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from opportune.core.predictive import (
    UNSEEN_WINS,
    Posterior,
    describe_choice,
    scored_candidates,
    utility,
)
from opportune.core.routing import (
    Agent,
    Book,
    Decision,
    Hold,
    Interaction,
    PredictiveSettings,
    Queue,
    Routing,
    spare,
    standard_decision,
    waiting_order,
)

Scores = Mapping[str, Mapping[str, float]]


def route_predictive_assignment(
    waiting: Sequence[Interaction],
    agents: Sequence[Agent],
    queues: Mapping[str, Queue],
    now_ms: int,
    scores: Scores,
    *,
    held_since: Mapping[str, int] | None = None,
    posteriors: Mapping[str, Posterior] | None = None,
    rng: random.Random | None = None,
) -> Routing:
    """Predictive routing by joint assignment: waiting interactions × free agent slots
    (an agent with spare capacity c appears c times), maximising the total predicted KPI
    over the most interactions that can be served now.

    Interactions in non-predictive or dry-run queues, those not scored, and those *passed
    over* (left waiting with an eligible agent free) for ``hold_timeout_s`` or longer, go
    first, by standard routing. The rest are matched within a window of the first
    ``window_factor`` × free slots in waiting order, which bounds how far a choice can
    overtake the waiting order. Exploration randomises the utilities; the propensity of a
    pair is then its frequency over ``propensity_draws`` re-runs of the randomisation.

    ``held_since`` maps an interaction to when it was first held (``Hold.since_ms``); the
    caller keeps each entry until the interaction leaves the queue.

    Two chats, two agents: each goes where it scores best in total, not first come first
    served (``c1`` waited longer, yet ``ann`` is better for ``c2`` by more).

    >>> ann, bob = Agent("ann", capacity={"chat": 1}), Agent("bob", capacity={"chat": 1})
    >>> sales = Queue("sales", predictive=PredictiveSettings(enabled=True))
    >>> c1 = Interaction("c1", "sales", "chat", arrived_at_ms=0)
    >>> c2 = Interaction("c2", "sales", "chat", arrived_at_ms=5)
    >>> scores = {"c1": {"ann": 0.6, "bob": 0.5}, "c2": {"ann": 0.9, "bob": 0.1}}
    >>> routing = route_predictive_assignment([c1, c2], [ann, bob], {"sales": sales}, 10, scores)
    >>> sorted((d.interaction_id, d.agent_id) for d in routing.decisions)
    [('c1', 'bob'), ('c2', 'ann')]
    """
    held_since = held_since or {}
    book = Book(agents, now_ms)
    predictive, decisions = _first_by_standard(
        waiting_order(waiting, queues), book, queues, scores, held_since
    )
    new, held = _assign_jointly(predictive, book, queues, scores, held_since, posteriors or {}, rng)
    return Routing(tuple(decisions + new), held)


def _first_by_standard(
    order: Sequence[Interaction],
    book: Book,
    queues: Mapping[str, Queue],
    scores: Scores,
    held_since: Mapping[str, int],
) -> tuple[list[Interaction], list[Decision]]:
    """Route by standard routing, in ``order``, the interactions of non-predictive and
    dry-run queues and those passed over too long; return the rest, for the matching."""
    now_ms = book.now_ms
    decisions: list[Decision] = []
    predictive: list[Interaction] = []
    dry = [
        i
        for i in order
        if queues[i.queue].predictive.enabled and queues[i.queue].predictive.dry_run
    ]
    would = _would_choose(dry, book, queues, scores) if dry else {}
    for interaction in order:
        queue = queues[interaction.queue]
        settings = queue.predictive
        since = held_since.get(interaction.id)
        overdue = since is not None and now_ms - since >= settings.hold_timeout_s * 1000
        if settings.enabled and not settings.dry_run and not overdue:
            predictive.append(interaction)
            continue
        free = book.free_for(interaction, queue)
        if not free:
            continue
        if not settings.enabled:
            decisions.append(standard_decision(book, interaction, queue, free))
        elif settings.dry_run:
            w = would.get(interaction.id)
            decisions.append(
                standard_decision(
                    book,
                    interaction,
                    queue,
                    free,
                    method="dry_run",
                    reason=(
                        f"dry run: assignment would choose {w}"
                        if w
                        else "dry run: assignment would leave it waiting"
                    ),
                    scores=scored_candidates(interaction, free, scores, settings) or (),
                    would_choose=w,
                )
            )
        else:
            assert since is not None
            reason = f"passed over {(now_ms - since) / 1000:.0f} s ≥ hold timeout"
            decisions.append(
                standard_decision(book, interaction, queue, free, method="fallback", reason=reason)
            )
    return predictive, decisions


def _would_choose(
    dry: Sequence[Interaction], book: Book, queues: Mapping[str, Queue], scores: Scores
) -> dict[str, str]:
    """What the joint assignment would do for dry-run interactions, on a copy of the book."""
    shadow = Book(list(book.agents.values()), book.now_ms)
    plain = {
        n: replace(q, predictive=replace(q.predictive, dry_run=False, exploration="off"))
        for n, q in queues.items()
    }
    decisions, _ = _assign_jointly(dry, shadow, plain, scores, {}, {}, None)
    return {d.interaction_id: d.agent_id for d in decisions}


# ---- the matching -------------------------------------------------------------------------


def _perturbed(
    util: np.ndarray,
    col_agents: Sequence[str],
    settings: PredictiveSettings,
    posteriors: Mapping[str, Posterior],
    rng: random.Random,
) -> np.ndarray:
    """One randomised utility matrix: Thompson noise per agent, or ε-rows made random."""
    out = util.copy()
    if settings.exploration == "thompson":
        noise = {a: posteriors[a].noise(rng) for a in set(col_agents) if a in posteriors}
        out += np.array([noise.get(a, 0.0) for a in col_agents])[None, :]
    elif settings.exploration == "epsilon_greedy":
        for r in range(out.shape[0]):
            if rng.random() < settings.epsilon:
                out[r] = [rng.random() for _ in range(out.shape[1])]
    return out


def _solve(util: np.ndarray, valid: np.ndarray) -> list[tuple[int, int]]:
    """Max-cardinality, then max-utility matching over the valid (row, column) pairs."""
    from scipy.optimize import linear_sum_assignment  # only when a pass needs matching

    if not valid.any():
        return []
    lo, hi = float(util[valid].min()), float(util[valid].max())
    # A bonus per matched pair larger than any utility difference the matching could gain:
    # serving one more interaction always beats a better match for fewer.
    bonus = (hi - lo) * util.shape[0] + 1.0
    weight = np.where(valid, util - lo + bonus, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if valid[r, c]]


def _scarce_languages(book: Book) -> frozenset[str]:
    """Languages spoken by fewer than half of the available agents."""
    n = len(book.agents)
    count: dict[str, int] = {}
    for a in book.agents.values():
        for lang in a.languages:
            count[lang] = count.get(lang, 0) + 1
    return frozenset(lang for lang, k in count.items() if k * 2 < n)


def _spared(
    agent: Agent, interaction: Interaction, queue: Queue, scarce: frozenset[str]
) -> frozenset[str]:
    """The scarce languages ``agent`` speaks that ``interaction`` does not need."""
    return (agent.languages & scarce) - {interaction.language or queue.language}


def _reserve_cost(
    agent: Agent, interaction: Interaction, queue: Queue, scarce: frozenset[str]
) -> float:
    """What choosing ``agent`` for ``interaction`` gives up: ``reserve_weight`` per scarce
    language the agent speaks that this interaction does not need."""
    weight = queue.predictive.reserve_weight
    return weight * len(_spared(agent, interaction, queue, scarce)) if weight else 0.0


@dataclass(frozen=True, slots=True)
class _Problem:
    """One joint assignment: the rows (interactions with their free agents), the columns
    (agent slots by medium), and the utility of each valid pair."""

    rows: Sequence[Interaction]
    frees: Sequence[Sequence[Agent]]
    columns: Sequence[tuple[str, str, int]]  # (agent id, medium, slot)
    util: np.ndarray
    valid: np.ndarray
    scarce: frozenset[str]

    @property
    def col_agents(self) -> list[str]:
        return [c[0] for c in self.columns]


def _assign_jointly(
    candidates: Sequence[Interaction],
    book: Book,
    queues: Mapping[str, Queue],
    scores: Scores,
    held_since: Mapping[str, int],
    posteriors: Mapping[str, Posterior],
    rng: random.Random | None,
) -> tuple[list[Decision], tuple[Hold, ...]]:
    slots = sum(
        max(0, sum(a.capacity.values()) - sum(a.load.values())) for a in book.agents.values()
    )
    if not candidates or slots == 0:
        return [], ()
    rows, frees, decisions = _rows(candidates, book, queues, scores, slots)
    if not rows:
        return decisions, ()
    problem = _problem(rows, frees, book, queues, scores)
    # One exploration setting per call: the first row's queue decides (queues share it in
    # practice; mixing randomised and plain rows in one matching has no clear propensity).
    settings0 = queues[rows[0].queue].predictive
    pairs, propensities = _match(problem, settings0, posteriors, rng)
    assigned: set[int] = set()
    for (r, c), propensity in zip(pairs, propensities, strict=True):
        interaction, agent_id = rows[r], problem.col_agents[c]
        queue = queues[interaction.queue]
        scored = scored_candidates(interaction, frees[r], scores, queue.predictive) or ()
        why = _why(problem, r, agent_id, scored, book, queue, settings0)
        book.take(agent_id, interaction.medium)
        decisions.append(
            Decision(
                interaction.id,
                agent_id,
                "predictive",
                scored,
                propensity,
                why,
                candidates=tuple(a for a, _ in scored),
            )
        )
        assigned.add(r)
    held = tuple(
        Hold(
            i.id,
            held_since.get(i.id, book.now_ms),
            held_since.get(i.id, book.now_ms)
            + round(queues[i.queue].predictive.hold_timeout_s * 1000),
            "passed over by the joint assignment",
        )
        for r, i in enumerate(rows)
        if r not in assigned
    )
    return decisions, held


def _rows(
    candidates: Sequence[Interaction],
    book: Book,
    queues: Mapping[str, Queue],
    scores: Scores,
    slots: int,
) -> tuple[list[Interaction], list[list[Agent]], list[Decision]]:
    """The interactions within the window with their free agents; the unscored go by
    standard routing (the decisions returned)."""
    rows: list[Interaction] = []
    frees: list[list[Agent]] = []
    decisions: list[Decision] = []
    for interaction in candidates:
        if len(rows) >= slots * max(1, queues[interaction.queue].predictive.window_factor):
            break
        queue = queues[interaction.queue]
        free = book.free_for(interaction, queue)
        if not free:
            continue
        if scored_candidates(interaction, free, scores, queue.predictive) is None:
            decisions.append(
                standard_decision(
                    book, interaction, queue, free, method="fallback", reason="not scored"
                )
            )
            continue
        rows.append(interaction)
        frees.append(free)
    return rows, frees, decisions


def _problem(
    rows: list[Interaction],
    frees: list[list[Agent]],
    book: Book,
    queues: Mapping[str, Queue],
    scores: Scores,
) -> _Problem:
    columns = [
        (a.id, m, k)
        for a in book.agents.values()
        for m in sorted({i.medium for i in rows})
        for k in range(spare(a, m))
    ]
    util = np.zeros((len(rows), len(columns)))
    valid = np.zeros((len(rows), len(columns)), dtype=bool)
    scarce = _scarce_languages(book)
    for r, (interaction, free) in enumerate(zip(rows, frees, strict=True)):
        ok = {a.id for a in free}
        queue = queues[interaction.queue]
        for c, (agent_id, medium, _) in enumerate(columns):
            if agent_id in ok and medium == interaction.medium:
                valid[r, c] = True
                util[r, c] = utility(scores[interaction.id][agent_id], queue.predictive) - (
                    _reserve_cost(book.agents[agent_id], interaction, queue, scarce)
                )
    return _Problem(rows, frees, columns, util, valid, scarce)


def _match(
    problem: _Problem,
    settings: PredictiveSettings,
    posteriors: Mapping[str, Posterior],
    rng: random.Random | None,
) -> tuple[list[tuple[int, int]], list[float]]:
    """The matched (row, column) pairs, each with its propensity under the exploration."""
    util, valid, col_agents = problem.util, problem.valid, problem.col_agents
    if settings.exploration == "off":
        pairs = _solve(util, valid)
        return pairs, [1.0] * len(pairs)
    if rng is None:
        raise ValueError("exploration needs an rng")
    pairs = _solve(_perturbed(util, col_agents, settings, posteriors, rng), valid)
    freq: dict[tuple[int, str], int] = {}
    for _ in range(settings.propensity_draws):
        for r, c in _solve(_perturbed(util, col_agents, settings, posteriors, rng), valid):
            freq[(r, col_agents[c])] = freq.get((r, col_agents[c]), 0) + 1
    n = settings.propensity_draws
    return pairs, [max(freq.get((r, col_agents[c]), 0), UNSEEN_WINS) / n for r, c in pairs]


def _why(
    problem: _Problem,
    r: int,
    agent_id: str,
    scored: Sequence[tuple[str, float]],
    book: Book,
    queue: Queue,
    settings0: PredictiveSettings,
) -> str:
    """Why this pair: the best free agent, one kept for scarce-language callers, or the
    total's trade."""
    interaction = problem.rows[r]
    settings = queue.predictive
    explore = settings0.exploration != "off"
    how = ""
    if explore:
        how = "; Thompson sampling" if settings0.exploration == "thompson" else "; ε-greedy"
    rank = [a for a, _ in scored].index(agent_id)
    n_rows, n_slots = len(problem.rows), len(problem.columns)
    joint = f"joint assignment of {n_rows} waiting to {n_slots} free slot(s)"
    top = scored[0][0]
    kept = _reserve_cost(book.agents[top], interaction, queue, problem.scarce)
    if rank == 0:
        return f"{describe_choice(scored, agent_id, settings)}; {joint}{how}"
    if kept > 0 and not explore:
        langs = _spared(book.agents[top], interaction, queue, problem.scarce)
        return (
            f"predicted {settings.kpi_name} {dict(scored)[agent_id]:.3g}, "
            f"{rank + 1} of {len(scored)} free: {top} is kept for callers in "
            f"{', '.join(sorted(langs))} (reserve cost {kept:.3g}); {joint}"
        )
    return (
        f"predicted {settings.kpi_name} {dict(scored)[agent_id]:.3g}, "
        f"{rank + 1} of {len(scored)} free: the {joint} gave better-scored agents "
        f"to other waiting interactions for a higher total{how}"
    )
