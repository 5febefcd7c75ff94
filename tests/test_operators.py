"""Level-switch mutation keeps every budget exact (property tests) and offspring are distinct."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from paretopress.search.operators import distinct_offspring, flip_count, level_switch
from paretopress.spaces.depth import DepthSpace


@pytest.fixture(scope="module")
def spaces(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    return {(g, d): DepthSpace(model, g, d) for g in ("block", "sublayer") for d in (1, 2, 3, 5)}


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), granularity=st.sampled_from(["block", "sublayer"]),
       drop=st.sampled_from([1, 2, 3, 5]), steps=st.integers(1, 20))
def test_mutation_keeps_the_budget_exact(spaces, seed, granularity, drop, steps):
    space = spaces[(granularity, drop)]
    rng = np.random.default_rng(seed)
    genome = space.random_genome(rng)
    for _ in range(steps):
        child = level_switch(genome, space, rng)
        assert space.is_feasible(child)
        assert sum(child.levels) == drop
        assert sum(a != b for a, b in zip(child.levels, genome.levels, strict=True)) <= 6  # at most 3 flips
        genome = child


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 12))
def test_offspring_are_distinct_and_differ_from_the_parent(spaces, seed, count):
    space = spaces[("sublayer", 3)]
    rng = np.random.default_rng(seed)
    parent = space.random_genome(rng)
    children = distinct_offspring(parent, space, count, rng)
    assert len(children) == count
    assert len(set(children)) == count and parent not in children


def test_flip_count_follows_min_of_two_uniforms():
    rng = np.random.default_rng(0)
    counts = np.bincount([flip_count(rng) for _ in range(9000)], minlength=4)[1:] / 9000
    assert np.allclose(counts, [5 / 9, 3 / 9, 1 / 9], atol=0.02)


def test_tiny_space_gives_fewer_offspring_rather_than_looping(spaces):
    space = spaces[("block", 5)]  # 6 blocks, 5 dropped: only 5 other genomes exist
    parent = space.random_genome(np.random.default_rng(0))
    children = distinct_offspring(parent, space, 16, np.random.default_rng(0))
    assert len(children) == 5
