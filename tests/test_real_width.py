"""Structured levels on real SmolLM2-135M layers: structured OBS reconstructs the layer output better than magnitude."""

import pytest
import torch

from paretopress.evaluators.calibration import calibration_xtx
from paretopress.inputs.data import WIKI_SAMPLE, load_documents, pack_samples
from paretopress.inputs.models import load_model, load_tokenizer
from paretopress.spaces.structured import columns, magnitude, structured_obs

pytestmark = pytest.mark.real

MODEL = "smollm2-135m"
CASES = {  # output projection -> (columns per structure, structures kept): 3 KV groups of 3 heads x 64; 1536 channels
    "model.layers.2.self_attn.o_proj": (192, [2, 1]),
    "model.layers.27.self_attn.o_proj": (192, [2, 1]),
    "model.layers.14.mlp.down_proj": (1, [1344]),
}


@pytest.fixture(scope="module")
def layers():
    """(weight, X^T X) of a few real output projections over 16 calibration samples of 128 Wikipedia tokens."""
    model = load_model(MODEL)
    tokens = pack_samples(load_documents(WIKI_SAMPLE).calibration, load_tokenizer(MODEL), 128, 16)
    xtx = calibration_xtx(model, tuple(CASES), tokens, batch_size=8)
    return {unit: (model.get_submodule(unit).weight.detach(), xtx[unit]) for unit in CASES}


def output_error(weight: torch.Tensor, kept: torch.Tensor, narrowed: torch.Tensor, xtx: torch.Tensor) -> float:
    """||X (W - W')^T||^2 over the calibration inputs, W' the narrowed weight put back at its columns."""
    approx = torch.zeros_like(weight)
    approx[:, kept] = narrowed
    delta = (approx - weight).double()
    return float(torch.einsum("ij,jk,ik->", delta, xtx.double(), delta))


@pytest.mark.parametrize("unit", list(CASES))
def test_structured_obs_beats_magnitude(layers, unit):
    weight, xtx = layers[unit]
    size, kept = CASES[unit]
    results = {"obs": structured_obs(weight, xtx, size, kept), "magnitude": magnitude(weight, size, kept)}
    for k in kept:
        errors = {name: output_error(weight, columns(p.keep[:k], size), p.weights[k], xtx)
                  for name, p in results.items()}
        assert errors["obs"] < errors["magnitude"], (k, errors)
