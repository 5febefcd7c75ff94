"""Symmetric quant levels and ``export --format compressed-tensors``: a pack-quantized checkpoint that transformers
loads with the compressed-tensors library, whose held-out metrics are the store's."""

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from paretopress.cli import main
from paretopress.inputs.models import load_tokenizer
from paretopress.job import JobSpec
from paretopress.kernel.errors import UserError
from paretopress.report.export import export_candidate
from paretopress.report.formats.compressed_tensors import CompressedTensors
from paretopress.run import build_space, run_job
from paretopress.spaces import levels
from paretopress.spaces.quant import QuantSpace
from tests.support import TINY_ARCHITECTURES, job_yaml, make_tiny_architecture

SERVED = {"kind": "quant", "bits": 6.0, "widths": [4, 8, 16], "group_size": 16, "builder": "gptq",
          "symmetric": True, "tie": True, "calibration_samples": 8}


@pytest.fixture(scope="module")
def llama(tmp_path_factory, text_files):
    return make_tiny_architecture("LlamaForCausalLM", tmp_path_factory.mktemp("llama"), text_files)


def study(llama, text_files, tmp_path, space) -> str:
    spec = JobSpec.model_validate(job_yaml(llama, text_files, space=space, **{"strategy.generations": 1}))
    run_job(spec, tmp_path / "s.db", executor="local")
    return str(tmp_path / "s.db")


def test_symmetric_levels_have_the_middle_code_as_zero_and_cost_no_zero_points():
    weight = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    quantized = levels.rtn(weight, [4, 8], 16, symmetric=True)
    assert torch.equal(quantized.zero[0], torch.full((8, 4), 8, dtype=torch.uint8))
    assert torch.equal(quantized.zero[1], torch.full((8, 4), 128, dtype=torch.uint8))
    error = levels.dequantize(quantized.codes[1], quantized.scale[1], quantized.zero[1], 16) - weight
    step = quantized.scale[1].float().repeat_interleave(16, dim=1)  # the range is +-max|w| over codes 0..255
    assert (error.abs() <= step / 2 + 1e-6)[weight < 0].all() and (error.abs() <= step + 1e-6).all()


def test_symmetric_quant_costs_codes_and_scales_only(llama):
    model = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32)
    symmetric = QuantSpace(model, 6.0, [4, 8, 16], "rtn", 16, symmetric=True)
    asymmetric = QuantSpace(model, 6.0, [4, 8, 16], "rtn", 16)
    groups, four = symmetric.groups_per_unit[0], symmetric.widths.index(4)
    assert symmetric.unit_bits(0, four) == 4 * symmetric.numels[0] + 16 * groups
    assert asymmetric.unit_bits(0, four) - symmetric.unit_bits(0, four) == 4 * groups


@pytest.mark.parametrize("space", [SERVED, {"kind": "joint", "depth": {"drop": 1}, "quant": SERVED}],
                         ids=["quant", "depth x quant"])
def test_a_compressed_tensors_export_loads_in_transformers_with_the_stores_metrics(space, llama, text_files,
                                                                                   tmp_path):
    db = study(llama, text_files, tmp_path, space)
    report = export_candidate(db, "tiny", "best", tmp_path / "ct", fmt="compressed-tensors")
    assert report.relative_difference("ppl") < 1e-3 and report.relative_difference("kl") < 1e-3
    config = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert config["format"] == "pack-quantized" and "lm_head" in config["ignore"]
    assert all(group["weights"]["symmetric"] and group["weights"]["num_bits"] in (4, 8)
               for group in config["config_groups"].values())
    with safe_open(tmp_path / "ct" / "model.safetensors", "pt") as tensors:
        stored = tensors.keys()  # safe_open is not iterable itself
        packed = [name for name in stored if name.endswith("weight_packed")]
        assert packed and all(tensors.get_tensor(name).dtype == torch.int32 for name in packed)
    dense = export_candidate(db, "tiny", "best", tmp_path / "dense")
    assert report.bytes < dense.bytes


@pytest.mark.parametrize("space, message", [
    ({**SERVED, "symmetric": False}, "asymmetric (zero-point) checkpoints"),
    ({**SERVED, "widths": [3, 4, 8], "bits": 5.0}, "vLLM serves 4 and 8"),
    ({**SERVED, "tie": False, "builder": "rtn"}, "vLLM fuses"),
    ({"kind": "depth", "drop": 1}, "this genome has none"),
    ({**SERVED, "group_size": 48}, "not a multiple of group_size 48"),
], ids=["asymmetric", "3 bits", "untied", "depth", "ragged groups"])
def test_what_the_format_cannot_hold_is_refused_in_one_line(space, message, llama, text_files, tmp_path, capsys):
    db = study(llama, text_files, tmp_path, space)
    capsys.readouterr()
    assert main(["export", "tiny", "--db", db, "--candidate", "best", "--out", str(tmp_path / "out"),
                 "--format", "compressed-tensors"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "out").exists()


CT_REFUSED = {"GPT2LMHeadModel": "Conv1D"}  # compressed-tensors quantizes nn.Linear modules only


@pytest.mark.parametrize("architecture", list(TINY_ARCHITECTURES))
def test_a_checkpoint_gives_the_candidates_logits_or_is_refused_in_one_line(architecture, tmp_path, text_files):
    """Every architecture: the uniform symmetric quant genome written as compressed-tensors and read back computes
    what the search evaluated, or the format refuses the architecture in one line."""
    folder = make_tiny_architecture(architecture, tmp_path / "model", text_files)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    spec = JobSpec.model_validate(job_yaml(folder, text_files, space={**SERVED, "builder": "rtn"}))
    space = build_space(spec, model)
    genome = space.uniform()
    tokens = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), space.applied(model, genome):
        expected = model(tokens).logits
    writer, out = CompressedTensors(), tmp_path / "out"
    if architecture in CT_REFUSED:
        with pytest.raises(UserError, match=CT_REFUSED[architecture]) as error:
            writer.write(space, model, genome, load_tokenizer(str(folder)), out)
        assert "\n" not in str(error.value) and not out.exists()
        return
    writer.write(space, model, genome, load_tokenizer(str(folder)), out)
    with torch.no_grad():
        logits = writer.load(out)(tokens).logits
    assert torch.allclose(logits, expected, atol=1e-5, rtol=1e-4)
