"""Level builders on real SmolLM2-135M layers: the calibration-aware ones reconstruct the layer output better."""

import pytest
import torch

from paretopress.evaluators.calibration import calibration_xtx
from paretopress.inputs.data import WIKI_SAMPLE, load_documents, pack_samples
from paretopress.inputs.models import load_model, load_tokenizer
from paretopress.spaces import levels

pytestmark = pytest.mark.real

MODEL = "smollm2-135m"
UNITS = ("model.layers.2.self_attn.q_proj", "model.layers.14.mlp.gate_proj", "model.layers.27.self_attn.o_proj")


@pytest.fixture(scope="module")
def layers():
    """(weight, X^T X) of a few real layers over 16 calibration samples of 128 Wikipedia tokens."""
    model = load_model(MODEL)
    tokens = pack_samples(load_documents(WIKI_SAMPLE).calibration, load_tokenizer(MODEL), 128, 16)
    xtx = calibration_xtx(model, UNITS, tokens, batch_size=8)
    return {unit: (model.get_submodule(unit).weight.detach(), xtx[unit]) for unit in UNITS}


def output_error(weight: torch.Tensor, approx: torch.Tensor, xtx: torch.Tensor) -> float:
    """||X (W - W')^T||^2 over the calibration inputs, from X^T X."""
    delta = (approx - weight).double()
    return float(torch.einsum("ij,jk,ik->", delta, xtx.double(), delta))


@pytest.mark.parametrize("unit", UNITS)
def test_sparsegpt_and_wanda_beat_magnitude(layers, unit):
    weight, xtx = layers[unit]
    removed = [weight.numel() // 2]
    nested = {
        name: weight.masked_fill(levels.removal_levels(positions, removed) == 0, 0)
        for name, positions in (("magnitude", levels.magnitude_positions(weight)),
                                ("wanda", levels.wanda_positions(weight, xtx)))
    }
    errors = {name: output_error(weight, w, xtx) for name, w in nested.items()}
    errors["sparsegpt"] = output_error(weight, levels.sparsegpt(weight, xtx, removed)[0], xtx)
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


@pytest.mark.parametrize("unit", UNITS)
def test_gptq_beats_rtn(layers, unit):
    weight, xtx = layers[unit]
    quantized = {"rtn": levels.rtn(weight, [2, 3, 4], 128), "gptq": levels.gptq(weight, xtx, [2, 3, 4], 128)}
    for i, width in enumerate((2, 3, 4)):
        errors = {name: output_error(weight, levels.dequantize(q.codes[i], q.scale[i], q.zero[i], 128), xtx)
                  for name, q in quantized.items()}
        assert errors["gptq"] < errors["rtn"], (width, errors)
