"""Whole fronts in one job on a tiny model: NSGA-II over every budget, and EvoPress budget sweeps."""

import json

import pytest

from paretopress.report.front import study_front
from paretopress.run import run_job
from paretopress.search.pareto import non_dominated
from paretopress.store.store import Store
from tests.support import InterruptAfter, make_job

NSGA2 = {"kind": "nsga2", "generations": 3, "population": 6, "tokens": 64}


def nsga2_job(tiny_model, text_files, **changes):
    job = make_job(tiny_model, text_files, **{"space.drop": 4, **changes})
    return job.model_validate({**job.model_dump(), "strategy": NSGA2})


def genomes(db, study="tiny"):
    with Store(db, readonly=True) as store:
        return [(json.loads(c.genome), c.origin) for c in store.candidates(store.study(study).id)]


def calibration_kl(db, study="tiny"):
    with Store(db, readonly=True) as store:
        keys = {c.id: c.genome_key for c in store.candidates(store.study(study).id)}
        return {keys[e.candidate_id]: e.value for e in store.evaluations(1, "calibration") if e.evaluator == "kl"}


def test_nsga2_front_is_non_dominated_deterministic_and_within_budget(tiny_model, text_files, tmp_path):
    job = nsga2_job(tiny_model, text_files)
    first = run_job(job, tmp_path / "a.db", executor="local")
    second = run_job(job, tmp_path / "b.db", executor="local")
    assert first.genomes == second.genomes and first.metrics == second.metrics
    assert genomes(tmp_path / "a.db") == genomes(tmp_path / "b.db")

    searched = [g for g, origin in genomes(tmp_path / "a.db") if origin == "nsga2"]
    assert all(1 <= sum(g) <= 4 for g in searched)
    assert len({sum(g) for g in searched}) >= 3  # one job, many budgets
    confirmed = [label for label in first.genomes if label != "dense"]
    assert len(confirmed) >= 2 and all(label.startswith("nsga2 ") for label in confirmed)
    calibration = calibration_kl(tmp_path / "a.db")
    points = [(calibration[first.genomes[label].key], first.metrics[label]["params"]) for label in confirmed]
    assert sorted(non_dominated(points)) == list(range(len(points)))  # non-dominated where they were searched
    with Store(tmp_path / "a.db", readonly=True) as store:
        study = store.study("tiny")
        assert len(study_front(store, study.id)) >= 2
        volumes = [h.value for h in store.hypervolumes(study.id)]
    assert len(volumes) == 3 and volumes == sorted(volumes) and volumes[-1] > 0  # fixed samples: never shrinks


def test_nsga2_optimises_the_quality_objective_it_is_given(tiny_model, text_files, tmp_path):
    """``objectives: [ppl, params]``: trials are scored by perplexity (it used to score and rank KL whatever the
    job said), and the confirmed front is non-dominated in calibration (ppl, params)."""
    job = nsga2_job(tiny_model, text_files)
    job = job.model_validate({**job.model_dump(), "strategy": {**NSGA2, "objectives": ["ppl", "params"]}})
    outcome = run_job(job, tmp_path / "s.db", executor="local")
    with Store(tmp_path / "s.db", readonly=True) as store:
        study = store.study("tiny")
        keys = {c.id: c.genome_key for c in store.candidates(study.id)}
        scored = {(keys[e.candidate_id], e.evaluator): e.value for e in store.evaluations(study.id, "calibration")}
        objectives = {h.objectives[0] for h in store.hypervolumes(study.id)}
    assert {evaluator for _, evaluator in scored} == {"ppl", "params"} and objectives == {"ppl"}
    searched = {key for key, _ in scored}
    points = {key: (scored[key, "ppl"], scored[key, "params"]) for key in searched}
    front = {list(points)[i] for i in non_dominated(list(points.values()))}
    confirmed = {genome.key for label, genome in outcome.genomes.items() if label.startswith("nsga2 ")}
    assert confirmed == front


def test_nsga2_resumed_equals_uninterrupted(tiny_model, text_files, tmp_path):
    job = nsga2_job(tiny_model, text_files)
    straight = run_job(job, tmp_path / "a.db", executor="local")
    with pytest.raises(KeyboardInterrupt):
        run_job(job, tmp_path / "b.db", executor="local", wrap_executor=lambda e: InterruptAfter(e, 8))
    resumed = run_job(job, tmp_path / "b.db", executor="local")
    assert resumed.resumed and resumed.genomes == straight.genomes and resumed.metrics == straight.metrics
    assert genomes(tmp_path / "a.db") == genomes(tmp_path / "b.db")
    with Store(tmp_path / "a.db", readonly=True) as a, Store(tmp_path / "b.db", readonly=True) as b:
        assert [h.value for h in a.hypervolumes(1)] == [h.value for h in b.hypervolumes(1)]


def test_sweep_equals_separate_runs(tiny_model, text_files, tmp_path):
    sweep = run_job(make_job(tiny_model, text_files, **{"space.drop": [1, 3]}), tmp_path / "sweep.db",
                    executor="local")
    for drop in (1, 3):
        alone = run_job(make_job(tiny_model, text_files, **{"space.drop": drop}), tmp_path / f"{drop}.db",
                        executor="local")
        assert sweep.genomes[f"evopress drop={drop}"] == alone.genomes["evopress"]
        assert sweep.metrics[f"evopress drop={drop}"] == alone.metrics["evopress"]
        assert sweep.genomes[f"initial drop={drop}"] == alone.genomes["initial"]
    with Store(tmp_path / "sweep.db", readonly=True) as store:
        front = study_front(store, 1)
        assert {row["params"] for row in front} >= {sweep.metrics[f"evopress drop={d}"]["params"] for d in (1, 3)}
        assert len(store.hypervolumes(1)) == 4


def test_nsga2_takes_one_budget(tiny_model, text_files):
    with pytest.raises(ValueError, match="give one number"):
        nsga2_job(tiny_model, text_files, **{"space.drop": [2, 3]})
