"""The gguf space and ``export --format gguf`` on a tiny Llama whose down_proj rows (256 weights) take K-quants.

What the search evaluates is what the file holds: a level's weight is gguf's dequantization of the stored bytes, a
genome's bits are the file's, and the exported file, loaded by transformers, gives the store's held-out metrics.
"""

import gguf
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from paretopress.cli import main
from paretopress.inputs.models import load_tokenizer
from paretopress.job import JobSpec
from paretopress.kernel.errors import UserError
from paretopress.report.export import export_candidate
from paretopress.report.formats.gguf import GgufFile
from paretopress.run import build_space, run_job
from paretopress.search.operators import mutate
from paretopress.spaces.gguf import GgufSpace
from paretopress.spaces.gguf_types import TYPES
from paretopress.spaces.specs.gguf import DEFAULT_TYPES
from tests.support import TINY_ARCHITECTURES, job_yaml, make_tiny_architecture, refused

GGUF = {"kind": "gguf", "bits": 5.0}
JOINT = {"kind": "joint", "depth": {"drop": 1}, "gguf": {"bits": 5.0}}
LEGACY = ("Q8_0", "Q5_0", "Q4_0")  # the default types that fit 64-wide rows


@pytest.fixture(scope="module")
def llama(tmp_path_factory, text_files):
    return make_tiny_architecture("LlamaForCausalLM", tmp_path_factory.mktemp("llama"), text_files)


@pytest.fixture(scope="module")
def model(llama):
    return AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32).eval()


def job(llama, text_files, space=GGUF, **changes) -> JobSpec:
    return JobSpec.model_validate(job_yaml(llama, text_files, space=space, **changes))


def test_each_linear_chooses_among_the_types_its_rows_allow(model):
    space = GgufSpace(model, 5.0, list(DEFAULT_TYPES))
    for unit, names, (_, cols) in zip(space.units, space.types, space.shapes, strict=True):
        assert names == (DEFAULT_TYPES if cols % 256 == 0 else LEGACY), unit
        assert list(names) == sorted(names, key=lambda name: -TYPES[name].bits_per_weight)
    assert {unit.rpartition(".")[2] for unit, names in zip(space.units, space.types, strict=True)
            if "Q4_K" in names} == {"down_proj"}


def test_a_levels_cost_is_the_bytes_gguf_stores_for_that_tensor(model):
    space = GgufSpace(model, 5.0, ["F16", *DEFAULT_TYPES])
    for index, (rows, cols) in enumerate(space.shapes):
        for level, name in enumerate(space.types[index]):
            size = gguf.quants.quant_shape_to_byte_shape((rows, cols), TYPES[name].qtype)
            assert space.unit_bits(index, level) == 8 * size[0] * size[1]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bits=st.floats(4.2, 8.0))
def test_every_genome_is_within_the_budget_and_on_its_boundary(model, seed, bits):
    space = GgufSpace(model, bits, list(DEFAULT_TYPES))
    genome = space.random_genome(np.random.default_rng(seed))
    assert space.is_feasible(genome) and space.cost(genome)["bits"] <= bits
    for i, level in enumerate(genome.levels):  # no single step towards the dense model still fits
        if level:
            assert not space.limit.fits((*genome.levels[:i], level - 1, *genome.levels[i + 1:]))
    uniform = space.uniform()
    assert space.is_feasible(uniform) and space.cost(uniform)["bits"] <= bits


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 6))
def test_depth_x_gguf_keeps_the_blocks_exact_and_the_bytes_within_the_limit(joint, seed, steps):
    rng = np.random.default_rng(seed)
    genome = joint.random_genome(rng)
    for _ in range(steps):
        genome = mutate(genome, joint, rng)
        depth, linear = joint.split(genome)
        assert sum(depth.levels) == 1 and joint.is_feasible(genome)
        assert joint.linear.cost(linear)["bits"] <= 5.0


@pytest.fixture(scope="module")
def joint(model, llama, text_files, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # the per-test cache fixture does not reach module fixtures
        patch.setenv("PARETOPRESS_CACHE", str(tmp_path_factory.mktemp("cache")))
        return build_space(job(llama, text_files, JOINT), model)


def test_levels_are_gguf_bytes_and_candidates_get_their_dequantized_weights(model, llama, text_files):
    space = build_space(job(llama, text_files, {**GGUF, "types": ["F16", "Q8_0", "Q4_K", "Q4_0", "Q2_K"]}), model)
    down = next(i for i, unit in enumerate(space.units) if unit.endswith("down_proj"))
    dense = space.dense_weight(model, down).detach()
    for level, name in enumerate(space.types[down]):
        data = space.encoded(down, level, dense)
        assert np.array_equal(data, TYPES[name].quantize(dense.numpy()))  # stored once, as the codec writes it
        expected = gguf.quants.dequantize(data, TYPES[name].qtype)
        assert torch.equal(space.level_weight(down, level, dense), torch.from_numpy(expected))
    genome = space.uniform()
    with space.applied(model, genome):
        applied = model.get_submodule(space.units[down]).weight.detach().clone()
    assert torch.equal(applied, space.level_weight(down, genome.levels[down], dense))


def test_imatrix_levels_weigh_each_column_by_its_calibration_inputs(model, llama, text_files):
    """Q4_0 and Q5_0 levels are the codec's importance-weighted bytes for diag(X^T X); the other types are the
    reference quantizer's (as llama.cpp quantizes them with an importance matrix too: benchmarks/gguf_types_check.py
    compares both paths with llama.cpp's bytes)."""
    spec = job(llama, text_files, {**GGUF, "builder": "imatrix", "types": ["Q8_0", "Q5_0", "Q4_0"]})
    space = build_space(spec, model)
    plain = GgufSpace(model, 5.0, ["Q8_0", "Q5_0", "Q4_0"])
    dense = space.dense_weight(model, 0).detach()
    differs = {name: not np.array_equal(space.encoded(0, level, dense), plain.unit_levels(model, 0, None)
                                        .get(f"{space.units[0]}.{name}", np.empty(0)).numpy())
               for level, name in enumerate(space.types[0])}
    assert differs == {"Q8_0": False, "Q5_0": True, "Q4_0": True}
    assert space.needs_calibration and not plain.needs_calibration


def test_tied_units_give_each_member_its_own_rows_of_the_bytes(model, llama, text_files):
    space = build_space(job(llama, text_files, {**GGUF, "tie": True}), model)
    genome = space.uniform()
    tensors = space.gguf_tensors(model, genome)
    fused = next(i for i, members in enumerate(space.members) if len(members) == 3)
    whole = space.encoded(fused, genome.levels[fused], space.dense_weight(model, fused))
    parts = [tensors[model.get_submodule(name)][1] for name in space.members[fused]]
    assert np.array_equal(np.concatenate(parts), whole) and [len(p) for p in parts] == list(space.rows[fused])


@pytest.mark.parametrize("space", [GGUF, {**GGUF, "tie": True, "embeddings": "Q8_0", "builder": "imatrix"},
                                   {"kind": "depth", "drop": 1}, JOINT],
                         ids=["gguf", "gguf tied, Q8_0 embeddings, imatrix", "depth", "depth x gguf"])
def test_a_gguf_export_loads_in_transformers_with_the_stores_metrics(space, llama, text_files, tmp_path, capsys):
    spec = job(llama, text_files, space, **{"strategy.generations": 2})
    outcome = run_job(spec, tmp_path / "s.db", executor="local")
    assert all(cost.get("bits", 0) <= 5.0 for label, cost in outcome.costs.items() if label != "dense")
    assert main(["export", "tiny", "--db", str(tmp_path / "s.db"), "--out", str(tmp_path / "out"),
                 "--candidate", "best", "--format", "gguf"]) == 0
    printed = capsys.readouterr()
    assert "model.gguf" in printed.out and "Converting" not in printed.err  # transformers' GGUF bar kept off
    report = export_candidate(tmp_path / "s.db", "tiny", "best", tmp_path / "out", force=True, fmt="gguf")
    assert report.relative_difference("ppl") < 1e-3 and report.relative_difference("kl") < 1e-3
    reader = gguf.GGUFReader(tmp_path / "out" / "model.gguf")
    types = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    assert max(int(name.split(".")[1]) for name in types if name.startswith("blk.")) == 3 - (space["kind"] != "gguf")
    fixed = space.get("embeddings", space.get("gguf", {}).get("embeddings", "F16"))
    assert types["token_embd.weight"] == types["output.weight"] == fixed  # the tiny Llama's head is untied
    if space["kind"] != "depth":
        linears = {name: kind for name, kind in types.items() if "blk." in name and "norm" not in name}
        stored = sum(tensor.n_bytes for tensor in reader.tensors if tensor.name in linears)
        bits = report_cost(tmp_path)["bits"] if space["kind"] == "gguf" else None
        assert stored == report_cost(tmp_path)["bytes"] if bits is None else 8 * stored == pytest.approx(
            bits * linear_weights(reader, linears))
        assert any(kind.endswith("_K") for kind in linears.values())
    assert report.bytes == (tmp_path / "out" / "model.gguf").stat().st_size


def report_cost(tmp_path) -> dict:
    import json

    return json.loads((tmp_path / "out" / "paretopress.json").read_text())["cost"]


def linear_weights(reader: gguf.GGUFReader, names: dict) -> int:
    return sum(int(tensor.n_elements) for tensor in reader.tensors if tensor.name in names)


def test_a_quant_genome_is_refused_as_gguf_in_one_line(llama, text_files, tmp_path, capsys):
    quant = {"kind": "quant", "bits": 4.0, "widths": [2, 3, 4], "group_size": 16, "builder": "rtn"}
    run_job(job(llama, text_files, quant, **{"strategy.generations": 1}), tmp_path / "s.db", executor="local")
    capsys.readouterr()
    assert main(["export", "tiny", "--db", str(tmp_path / "s.db"), "--out", str(tmp_path / "out"),
                 "--candidate", "best", "--format", "gguf"]) == 2
    err = capsys.readouterr().err.strip()
    assert "search kind gguf to export GGUF" in err and "\n" not in err and not (tmp_path / "out").exists()
    assert main(["export", "tiny", "--db", str(tmp_path / "s.db"), "--out", str(tmp_path / "out"),
                 "--candidate", "best", "--format", "onnx"]) == 2
    assert "unknown export format 'onnx'" in capsys.readouterr().err


@pytest.mark.parametrize("space, message", [
    ({**GGUF, "bits": 3.0}, "gguf budget 3 bits per weight is impossible"),
    ({**GGUF, "types": ["Q4_K", "Q2_K"]}, "none of the GGUF types ['Q4_K', 'Q2_K'] fits"),
    ({**GGUF, "types": ["Q8_0", "Q7_0"]}, "GGUF type 'Q7_0' is not one the gguf space writes"),
    ({**GGUF, "embeddings": "Q4_K"}, "embeddings: Q4_K needs rows of a multiple of 256 weights"),
], ids=["impossible budget", "no type fits", "unknown type", "embeddings type does not fit"])
def test_bad_gguf_space_is_one_line_exit_2_and_leaves_the_store(space, message, llama, text_files, tmp_path,
                                                                 capsys):
    refused(job_yaml(llama, text_files), job_yaml(llama, text_files, space=space), message, tmp_path, capsys)


def test_a_budget_error_names_the_possible_range(model):
    with pytest.raises(UserError, match=r"lies between 4\.\d+ and 8\.5000"):
        GgufSpace(model, 9.0, list(DEFAULT_TYPES))


GGUF_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")  # what the gguf format writes


@pytest.mark.parametrize("architecture", list(TINY_ARCHITECTURES))
def test_a_gguf_file_gives_the_candidates_logits_or_is_refused_in_one_line(architecture, tmp_path, text_files):
    """Every architecture: a gguf-space candidate written as .gguf and read back by transformers computes what the
    search evaluated (the same bytes, dequantized by gguf), or the format refuses the architecture in one line."""
    folder = make_tiny_architecture(architecture, tmp_path / "model", text_files)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    space = build_space(job(folder, text_files), model)
    genome = space.uniform()
    tokens = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), space.applied(model, genome):
        expected = model(tokens).logits
    if architecture not in GGUF_ARCHITECTURES:
        with pytest.raises(UserError, match="export --format gguf writes llama, qwen2 models, not") as error:
            GgufFile().write(space, model, genome, load_tokenizer(str(folder)), tmp_path / "out")
        assert "\n" not in str(error.value) and not (tmp_path / "out").exists()
        return
    GgufFile().write(space, model, genome, load_tokenizer(str(folder)), tmp_path / "out")
    with torch.no_grad():
        logits = GgufFile().load(tmp_path / "out")(tokens).logits
    assert torch.allclose(logits, expected, atol=1e-5, rtol=1e-4)


def test_the_fixed_matrices_are_decoded_from_the_tensor_given_when_a_freed_ones_id_comes_back(model):
    """The embeddings' and head's decoded copies are kept per tensor: a tensor freed (an exported model) must not
    hand its copy to a new tensor that Python gives the same id."""
    space = GgufSpace(model, 5.0, list(DEFAULT_TYPES))
    shape = tuple(model.get_input_embeddings().weight.shape)
    ids = set()
    for seed in range(6):
        weight = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        ids.add(id(weight))
        _, decoded = space._fixed(weight)
        expected = space.embeddings.dequantize(space.embeddings.quantize(weight.numpy()), shape)
        assert np.array_equal(decoded.detach().numpy(), expected)
        del weight, decoded
    assert len(ids) < 6  # Python did give a freed tensor's id to a new one: the case checked
