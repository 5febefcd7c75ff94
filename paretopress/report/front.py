"""Non-dominated candidates over (quality, cost), all objectives minimised."""

from __future__ import annotations

from paretopress.evaluators.samples import HELDOUT
from paretopress.kernel.errors import UserError
from paretopress.search.pareto import non_dominated
from paretopress.store.store import Store


def study_front(store: Store, study_id: int, objectives: tuple[str, ...] | None = None) -> list[dict]:
    """Candidates of a study with held-out values for every objective (default: KL and the study's front cost),
    non-dominated ones only, cheapest first."""
    objectives = objectives or ("kl", front_cost(store.study(study_id).spec))
    return _front(_heldout_rows(store, study_id, objectives), objectives)


def front_cost(spec: dict) -> str:
    """The cost axis a study's front is ranked by (``front.cost`` of its job; params in studies stored before it)."""
    return spec.get("front", {}).get("cost", "params")


def model_front(store: Store, model: str, objectives: tuple[str, ...] = ("kl", "params")) -> list[dict]:
    """The front over every study of one model (``spec["model"]``); each row names its study.

    Held-out values of two studies are comparable only when they share data and evaluation settings (the held-out
    pool depends on those alone), so this suits studies that differ in space, budget or strategy.
    """
    studies = [s for s in store.studies() if s.spec["model"] == model]
    if not studies:
        raise UserError(f"no study of model {model!r} in {store.path}")
    rows = [{"study": s.name, **row} for s in studies for row in _heldout_rows(store, s.id, objectives)]
    return _front(rows, objectives)


def _heldout_rows(store: Store, study_id: int, objectives: tuple[str, ...]) -> list[dict]:
    """One row per candidate with held-out values for every objective (the latest evaluation of each evaluator)."""
    by_candidate: dict[int, dict[str, float]] = {}
    for evaluation in store.evaluations(study_id, HELDOUT):
        by_candidate.setdefault(evaluation.candidate_id, {})[evaluation.evaluator] = evaluation.value
    candidates = {c.id: c for c in store.candidates(study_id)}
    return [
        {"candidate": cid, "origin": candidates[cid].origin, "generation": candidates[cid].generation, **values}
        for cid, values in by_candidate.items()
        if all(o in values for o in objectives)
    ]


def _front(rows: list[dict], objectives: tuple[str, ...]) -> list[dict]:
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
