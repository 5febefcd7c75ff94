"""``run.device``: workers on the CPU (every test here) or on CUDA where the machine or the Ray cluster has a GPU.

These machines have none, so the CUDA path itself is not run; what a user without one meets is: ``auto`` computes
on the CPU, and ``cuda`` is refused in one line before any work. What the controller computes on its GPU with cuda
workers (level databases, baselines) is checked here to make every tensor where its inputs are.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretopress.devices import controller_device, resolve_device
from paretopress.evaluators.calibration import calibration_xtx
from paretopress.job import JobSpec
from paretopress.kernel.errors import UserError
from paretopress.run import build_space, run_job
from paretopress.search.baselines.base import Calibration
from paretopress.spaces.depth import DepthSpace
from paretopress.spaces.gguf import GgufSpace
from paretopress.spaces.quant import QuantSpace
from paretopress.spaces.sparsity import SparsitySpace
from paretopress.spaces.width import WidthSpace
from tests.support import QUANT, SPARSITY, baseline, job_yaml, refused

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")


def test_cuda_without_a_gpu_is_refused_in_one_line_and_leaves_the_store(tiny_model, text_files, tmp_path, capsys):
    refused(job_yaml(tiny_model, text_files), job_yaml(tiny_model, text_files, **{"run.device": "cuda"}),
            "run.device: cuda, but torch sees no CUDA device here; use run.device: cpu (or auto)", tmp_path, capsys)


def test_a_ray_cluster_without_gpus_runs_auto_on_the_cpu_and_refuses_cuda(ray_cluster):
    assert resolve_device("auto", "ray") == resolve_device("auto", "local") == "cpu"
    with pytest.raises(UserError, match="the Ray cluster has no GPU resources"):
        resolve_device("cuda", "ray")


def test_the_controller_computes_on_its_own_gpu_only():
    """Workers on a cluster's GPUs do not put the controller on a GPU this machine lacks."""
    assert controller_device("cuda") == controller_device("cpu") == "cpu"


def test_the_device_is_a_run_setting_not_part_of_the_study(tiny_model, text_files, tmp_path):
    """A study run with ``device: auto`` resumes with ``device: cpu``: same study, every value from the store."""
    first = run_job(JobSpec.model_validate(job_yaml(tiny_model, text_files)), tmp_path / "s.db", executor="local")
    again = run_job(JobSpec.model_validate(job_yaml(tiny_model, text_files, **{"run.device": "cpu"})),
                    tmp_path / "s.db", executor="local")
    assert again.resumed and again.evaluated == 0 and again.metrics == first.metrics


def test_dtype_auto_is_half_precision_on_a_gpu_and_float32_on_a_cpu(tiny_model, text_files):
    """What a study records is the dtype ``auto`` resolved to: on a CPU float32, stored as before ``auto`` existed
    (so older studies resume), on a GPU bfloat16; a stored spec without a dtype reads back as float32."""
    job = JobSpec.model_validate(job_yaml(tiny_model, text_files))
    assert job.evaluation.dtype == "auto"
    with pytest.raises(ValueError, match="unresolved"):
        job.study_spec()
    on_cpu, on_gpu = job.on_device("cpu").study_spec(), job.on_device("cuda").study_spec()
    assert "dtype" not in on_cpu["evaluation"] and on_gpu["evaluation"]["dtype"] == "bfloat16"
    assert JobSpec.from_stored("s", on_cpu).evaluation.dtype == "float32"
    assert JobSpec.from_stored("s", on_gpu).evaluation.dtype == "bfloat16"
    half = JobSpec.model_validate(job_yaml(tiny_model, text_files, **{"evaluation.dtype": "float16"}))
    assert half.on_device("cuda").evaluation.dtype == "float16"


def test_float16_on_a_cpu_is_refused_in_one_line_and_leaves_the_store(tiny_model, text_files, tmp_path, capsys):
    refused(job_yaml(tiny_model, text_files), job_yaml(tiny_model, text_files, **{"evaluation.dtype": "float16"}),
            "evaluation.dtype: float16 needs the workers on a GPU (run.device: cuda)", tmp_path, capsys)


def test_a_half_precision_study_resumed_where_auto_means_float32_is_refused(tiny_model, text_files, tmp_path, capsys):
    """A study ``auto`` ran in bfloat16 on a GPU, resumed with ``auto`` on a CPU, would change its arithmetic: refused
    in one line naming the dtype, the store unchanged (pin ``evaluation.dtype`` to move a study between devices)."""
    refused(job_yaml(tiny_model, text_files, **{"evaluation.dtype": "bfloat16"}), job_yaml(tiny_model, text_files),
            "evaluation.dtype: \"bfloat16\" -> the default", tmp_path, capsys)


BUILDERS = {
    "sparsity wanda": lambda model: SparsitySpace(model, 0.5, "wanda", 2),
    "sparsity magnitude": lambda model: SparsitySpace(model, 0.5, "magnitude", 2),
    "sparsity sparsegpt": lambda model: SparsitySpace(model, 0.5, "sparsegpt", 2),
    "quant gptq": lambda model: QuantSpace(model, 3.0, [2, 3, 4], "gptq", 32),
    "quant rtn symmetric": lambda model: QuantSpace(model, 3.0, [2, 4], "rtn", 32, symmetric=True),
    "width obs": lambda model: WidthSpace(model, [1.0, 0.5, 0.0], [1.0, 0.5, 0.25, 0.0], "obs"),
    "width magnitude": lambda model: WidthSpace(model, [1.0, 0.5, 0.0], [1.0, 0.5, 0.0], "magnitude"),
    "gguf imatrix": lambda model: GgufSpace(model, 5.0, ["Q8_0", "Q5_0", "Q4_0"], builder="imatrix"),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_level_builders_compute_where_their_inputs_are(name, tiny_model):
    """Every tensor a level builder makes is on its inputs' device (a GPU's, with the model there), found without a
    GPU: with ``meta`` as the default device, a tensor made without naming its device is a meta tensor, and meeting
    the CPU inputs it fails or changes what is stored. So each unit's levels built that way equal the plain build."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    space = BUILDERS[name](model)
    inputs = space.calibration_inputs()
    tokens = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    statistics = calibration_xtx(model, inputs, tokens, batch_size=2)
    for index, unit in enumerate(inputs):
        plain = space.unit_levels(model, index, statistics[unit])
        with torch.device("meta"):
            defaulted = space.unit_levels(model, index, statistics[unit])
        assert plain.keys() == defaulted.keys()
        for key, tensor in plain.items():
            assert defaulted[key].device.type == "cpu" and torch.equal(defaulted[key], tensor), key


LINEAR_SPACES = {"sparsity": SPARSITY, "quant": QUANT}
DEPTH_BASELINES = ["shortgpt", "angular", "finercut", "spdy"]
LINEAR_BASELINES = [("sparsity", "uniform"), ("sparsity", "owl"), ("sparsity", "spdy"), ("quant", "spdy")]


@pytest.mark.parametrize("kind, method", [*(("depth", m) for m in DEPTH_BASELINES), *LINEAR_BASELINES])
def test_baselines_compute_where_the_model_is(kind, method, tiny_model, text_files):
    """A baseline's passes and statistics are on the model's device (the controller's GPU, with the model there),
    found as the builders' are: with ``meta`` as the default device, the same genomes as the plain run."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    space = (DepthSpace(model, "block", 2) if kind == "depth" else
             build_space(JobSpec.model_validate(job_yaml(tiny_model, text_files, space=LINEAR_SPACES[kind])), model))
    tokens = torch.randint(0, model.config.vocab_size, (4, 24), generator=torch.Generator().manual_seed(0))
    plain = baseline(method).propose([space], Calibration(model, tokens, batch_size=2))
    with torch.device("meta"):
        defaulted = baseline(method).propose([space], Calibration(model, tokens, batch_size=2))
    assert defaulted == plain
