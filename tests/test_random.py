"""The random strategy: feasible draws on one fixed sample set, deterministic, resumable; EvoPress beats it."""

import numpy as np
import pytest
from transformers import AutoModelForCausalLM

from paretopress.run import run_job
from paretopress.search.strategies.evopress import EvoPress, Stage
from paretopress.search.strategies.random import RandomSearch
from paretopress.spaces.depth import DepthSpace
from tests.support import InterruptAfter, make_job

COSTS = np.array([5.0, 1.0, 4.0, 0.5, 3.0, 2.0, 6.0, 0.2, 7.0, 0.1, 8.0, 9.0])  # one per sub-layer of the tiny model
RANDOM = {"kind": "random", "generations": 3, "per_generation": 4, "tokens": 64}


@pytest.fixture(scope="module")
def space(tiny_model):
    return DepthSpace(AutoModelForCausalLM.from_pretrained(tiny_model), "sublayer", drop=4)


def drive(strategy) -> int:
    """Run a strategy on the known objective (cost of the dropped units); returns the evaluations it asked for."""
    asked = 0
    while trials := strategy.ask():
        asked += len(trials)
        strategy.tell([{"kl": float(COSTS @ np.array(t.genome.levels))} for t in trials])
    return asked


def cost(genome) -> float:
    return float(COSTS @ np.array(genome.levels))


def test_draws_are_feasible_on_fixed_samples_and_the_best_is_kept(space):
    strategy = RandomSearch(space, generations=4, per_generation=5, samples=(1, 3), seed=0)
    seen = []
    while trials := strategy.ask():
        assert all(space.is_feasible(t.genome) and t.samples == (1, 3) for t in trials)
        seen += [t.genome for t in trials]
        strategy.tell([{"kl": cost(t.genome)} for t in trials])
    assert len(seen) == 20 and strategy.generation == 4
    assert strategy.final()["random"] == min(seen, key=cost)


def test_evopress_beats_random_at_equal_evaluations(space):
    evopress = EvoPress(space, generations=10, offspring=6, stages=[Stage(1, 2)], pool_size=16, seed=0)
    evaluations = drive(evopress)
    for seed in range(3):
        random = RandomSearch(space, generations=10, per_generation=evaluations // 10, samples=(0,), seed=seed)
        assert drive(random) == evaluations
        assert cost(evopress.final()["evopress"]) <= cost(random.final()["random"])


def test_random_sweep_is_deterministic_and_resumes_exactly(tiny_model, text_files, tmp_path):
    job = make_job(tiny_model, text_files, **{"space.drop": [1, 2]})
    job = job.model_validate({**job.model_dump(), "strategy": RANDOM})
    straight = run_job(job, tmp_path / "a.db", executor="local")
    assert set(straight.genomes) == {"dense", "random drop=1", "random drop=2"}
    assert [sum(straight.genomes[f"random drop={d}"].levels) for d in (1, 2)] == [1, 2]
    with pytest.raises(KeyboardInterrupt):
        run_job(job, tmp_path / "b.db", executor="local", wrap_executor=lambda e: InterruptAfter(e, 5))
    resumed = run_job(job, tmp_path / "b.db", executor="local")
    assert resumed.genomes == straight.genomes and resumed.metrics == straight.metrics
