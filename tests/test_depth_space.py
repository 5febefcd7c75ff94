"""Depth space: exact costs, in-place application that copies nothing and is undone, export shapes."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from paretopress.kernel.errors import UserError
from paretopress.kernel.params import count_parameters
from paretopress.spaces.depth import DepthSpace
from paretopress.spaces.genome import Genome


@pytest.fixture()
def model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


def logits(model, tokens):
    with torch.inference_mode():
        return model(input_ids=tokens, use_cache=False).logits


@pytest.mark.parametrize("granularity", ["block", "sublayer"])
def test_cost_equals_parameters_of_the_materialised_model(model, granularity):
    space = DepthSpace(model, granularity, drop=3)
    rng = np.random.default_rng(0)
    for _ in range(10):
        genome = space.random_genome(rng)
        assert space.is_feasible(genome) and sum(genome.levels) == 3
        with space.applied(model, genome) as candidate:
            assert count_parameters(candidate) == space.cost(genome)["params"]


@pytest.mark.parametrize("granularity", ["block", "sublayer"])
def test_applied_copies_no_weights_and_is_undone(model, granularity):
    tokens = torch.randint(0, model.config.vocab_size, (2, 16))
    before = logits(model, tokens)
    pointers = {name: p.data_ptr() for name, p in model.named_parameters()}
    space = DepthSpace(model, granularity, drop=2)
    genome = space.random_genome(np.random.default_rng(1))
    with space.applied(model, genome) as candidate:
        assert not torch.equal(logits(candidate, tokens), before)
        live = {p.data_ptr() for p in candidate.parameters()}
        assert live <= set(pointers.values())  # every live tensor is an original one
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == pointers
    assert torch.equal(logits(model, tokens), before)


def test_dropping_a_block_equals_skipping_it(model):
    """Block 2 dropped == running the layer list without block 2 by hand."""
    space = DepthSpace(model, "block", drop=1)
    tokens = torch.randint(0, model.config.vocab_size, (1, 12))
    with space.applied(model, Genome((0, 0, 1, 0, 0, 0))):
        dropped = logits(model, tokens)
    layers = model.model.layers
    model.model.layers = torch.nn.ModuleList([layers[i] for i in (0, 1, 3, 4, 5)])
    expected = logits(model, tokens)
    model.model.layers = layers
    assert torch.equal(dropped, expected)


def test_sublayer_dropping_both_halves_equals_dropping_the_block(model):
    tokens = torch.randint(0, model.config.vocab_size, (1, 12))
    with DepthSpace(model, "block", drop=1).applied(model, Genome((0, 1, 0, 0, 0, 0))):
        block = logits(model, tokens)
    sub = DepthSpace(model, "sublayer", drop=2)
    with sub.applied(model, Genome((0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0))):
        halves = logits(model, tokens)
    assert torch.allclose(block, halves, atol=1e-6)


@pytest.mark.parametrize("granularity", ["block", "sublayer"])
def test_materialise_matches_applied(model, tiny_model, granularity, tmp_path):
    space = DepthSpace(model, granularity, drop=3)
    genome = space.random_genome(np.random.default_rng(2))
    tokens = torch.randint(0, model.config.vocab_size, (2, 16))
    with space.applied(model, genome):
        expected = logits(model, tokens)
    space.materialise(model, genome).save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert reloaded.config.num_hidden_layers == len(space.kept_blocks(genome))
    assert torch.allclose(logits(reloaded, tokens), expected, atol=1e-5)


@pytest.mark.parametrize("drop", [0, 6, 7, -1])
def test_impossible_budgets_are_user_errors(model, drop):
    with pytest.raises(UserError, match="drop"):
        DepthSpace(model, "block", drop=drop)
