"""Non-dominated candidates over (quality, cost), all objectives minimised."""

from __future__ import annotations

from collections.abc import Sequence

from paretopress.errors import UserError
from paretopress.search.store import Store
from paretopress.search.strategy import HELDOUT


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates (<= in every objective, < in one); duplicates all kept."""
    front = []
    for i, p in enumerate(points):
        dominated = any(
            all(a <= b for a, b in zip(q, p, strict=True)) and any(a < b for a, b in zip(q, p, strict=True))
            for j, q in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def study_front(store: Store, study_id: int, objectives: tuple[str, ...] = ("kl", "params")) -> list[dict]:
    """Candidates of a study with held-out values for every objective, non-dominated ones only, cheapest first."""
    by_candidate: dict[int, dict[str, float]] = {}
    for evaluation in store.evaluations(study_id, HELDOUT):
        by_candidate.setdefault(evaluation.candidate_id, {})[evaluation.evaluator] = evaluation.value
    candidates = {c.id: c for c in store.candidates(study_id)}
    rows = [
        {"candidate": cid, "origin": candidates[cid].origin, "generation": candidates[cid].generation, **values}
        for cid, values in by_candidate.items()
        if all(o in values for o in objectives)
    ]
    front = [rows[i] for i in non_dominated([[row[o] for o in objectives] for row in rows])]
    return sorted(front, key=lambda row: [row[o] for o in reversed(objectives)])


def best_candidate(store: Store, study_id: int) -> int:
    """The compressed candidate (not the dense reference) with the lowest held-out KL."""
    scored = [
        (e.value, e.candidate_id)
        for e in store.evaluations(study_id, HELDOUT)
        if e.evaluator == "kl" and e.candidate_id not in _dense_ids(store, study_id)
    ]
    if not scored:
        raise UserError(f"study {study_id} has no candidate with a held-out evaluation yet")
    return min(scored)[1]


def _dense_ids(store: Store, study_id: int) -> set[int]:
    return {c.id for c in store.candidates(study_id) if c.origin == "dense"}
