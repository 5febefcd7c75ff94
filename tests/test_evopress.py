"""EvoPress as a pure strategy: stage shapes, elitism, determinism, and convergence on a known objective."""

import itertools

import numpy as np
import pytest
from transformers import AutoModelForCausalLM

from paretopress.search.strategies.evopress import EvoPress, Stage
from paretopress.spaces.depth import DepthSpace


@pytest.fixture(scope="module")
def space(tiny_model):
    return DepthSpace(AutoModelForCausalLM.from_pretrained(tiny_model), "sublayer", drop=4)


COSTS = np.array([5.0, 1.0, 4.0, 0.5, 3.0, 2.0, 6.0, 0.2, 7.0, 0.1, 8.0, 9.0])  # one per sub-layer


def objective(trial, noise_seed=0):
    """Cost of the dropped units plus sample-dependent noise, like KL on a random minibatch."""
    noise = np.random.default_rng([noise_seed, *trial.samples]).normal(0, 0.05)
    return {"kl": float(COSTS @ np.array(trial.genome.levels)) + noise}


def run(strategy):
    batches = []
    while trials := strategy.ask():
        batches.append(trials)
        strategy.tell([objective(t) for t in trials])
    return batches


def make(space, seed, generations=15):
    return EvoPress(space, generations=generations, offspring=6, stages=[Stage(3, 2), Stage(1, 4)], pool_size=16,
                    seed=seed)


def test_stages_have_the_configured_shape_and_the_parent_joins_the_last(space):
    strategy = make(space, seed=0, generations=3)
    batches = run(strategy)
    assert [len(b) for b in batches] == [6, 4] * 3
    for first, last in zip(batches[::2], batches[1::2], strict=True):
        parent = first[0].parent
        assert all(len(t.samples) == 2 for t in first) and all(len(t.samples) == 4 for t in last)
        assert parent not in [t.genome for t in first] and last[-1].genome == parent
        assert first[0].samples != last[0].samples  # a fresh minibatch per stage
        assert all(space.is_feasible(t.genome) for t in first)


def test_same_seed_same_genomes_other_seed_other_path(space):
    a = [[t.genome for t in b] for b in run(make(space, seed=7))]
    b = [[t.genome for t in b] for b in run(make(space, seed=7))]
    c = [[t.genome for t in b] for b in run(make(space, seed=8))]
    assert a == b and a != c


def test_converges_to_the_cheapest_units_and_never_gets_worse(space):
    strategy = make(space, seed=1, generations=40)
    run(strategy)
    cheapest = set(np.argsort(COSTS)[:4])
    assert {i for i, level in enumerate(strategy.final()["evopress"].levels) if level} == cheapest
    true_costs = [COSTS @ np.array(r.parent.levels) for r in strategy.history]
    assert all(b <= a + 0.3 for a, b in itertools.pairwise(true_costs))  # elitism, up to noise


def _genome(space, dropped):
    return space.dense().with_levels({unit: 1 for unit in dropped})


def test_seeds_random_genomes_at_the_cheap_stages_and_every_start_at_the_last(space):
    starts = [_genome(space, (0, 2, 4, 6)), _genome(space, (1, 3, 5, 7))]
    strategy = EvoPress(space, generations=1, offspring=6, stages=[Stage(3, 2), Stage(1, 4)], pool_size=16, seed=0,
                        starts=starts, random_starts=5)
    screen_cheap, screen_last, *generation = run(strategy)
    assert len(screen_cheap) == 5 and all(len(t.samples) == 2 and t.genome not in starts for t in screen_cheap)
    assert [t.genome for t in screen_last[:2]] == starts and len(screen_last) == 2 + 3  # 3 random survivors
    assert all(t.origin == "seed" and t.generation is None for t in screen_cheap + screen_last)
    assert [len(b) for b in generation] == [6, 4] and generation[0][0].parent == strategy.final()["initial"]


@pytest.mark.parametrize("seed", range(5))
def test_the_seeded_start_is_the_best_seed_at_the_search_fitness(space, seed):
    """A start better than anything random must win; whichever wins, it is the best finalist of the last stage."""
    best = _genome(space, np.argsort(COSTS)[:4])
    strategy = EvoPress(space, generations=2, offspring=4, stages=[Stage(2, 2), Stage(1, 4)], pool_size=16, seed=seed,
                        starts=[_genome(space, (8, 10, 11, 6)), best], random_starts=6)
    _, finalists, *_ = run(strategy)
    fitness = {t.genome: objective(t)["kl"] for t in finalists}
    assert strategy.final()["initial"] == best == min(fitness, key=fitness.get)
    assert COSTS @ np.array(strategy.final()["evopress"].levels) <= COSTS @ np.array(best.levels) + 0.3


def test_one_start_without_random_seeds_starts_there_unscreened(space):
    start = _genome(space, (0, 1, 2, 3))
    strategy = EvoPress(space, generations=1, offspring=6, stages=[Stage(3, 2), Stage(1, 4)], pool_size=16, seed=0,
                        starts=[start])
    first, *_ = run(strategy)
    assert first[0].parent == start and first[0].generation == 0


def test_prescreening_ranks_offspring_as_the_fitness_does_and_finds_cheaper_genomes_sooner(space):
    """On an additive objective the surrogate should rank well above chance, and evaluating only its best quarter of
    the mutants should reach cheaper genomes in the same number of evaluations."""
    def final_cost(prescreen: int, seed: int) -> tuple[float, tuple[float, ...]]:
        strategy = EvoPress(space, generations=6, offspring=6, stages=[Stage(3, 2), Stage(1, 4)], pool_size=16,
                            seed=seed, prescreen=prescreen)
        run(strategy)
        return float(COSTS @ np.array(strategy.final()["evopress"].levels)), strategy.report()[""].surrogate

    plain = [final_cost(1, seed)[0] for seed in range(6)]
    screened = [final_cost(4, seed) for seed in range(6)]
    correlations = [c for _, per_generation in screened for c in per_generation]
    assert len(correlations) == 6 * 5  # every generation after the first has predictions to score
    assert np.nanmean(correlations) > 0.3
    assert np.mean([cost for cost, _ in screened]) < np.mean(plain)


def test_prescreening_is_deterministic_in_the_seed(space):
    def genomes(seed):
        strategy = EvoPress(space, generations=4, offspring=6, stages=[Stage(3, 2), Stage(1, 4)], pool_size=16,
                            seed=seed, prescreen=3)
        return [[t.genome for t in batch] for batch in run(strategy)]

    assert genomes(3) == genomes(3) != genomes(4)
