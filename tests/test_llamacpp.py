"""llama.cpp itself (the optional llama-cpp-python extra: ``make test-llamacpp``): it runs ``export --format gguf``
files, and our GGUF codec writes its quantizers' bytes.

llama.cpp computes its matrix products on quantized activations, so its metrics are close to the store's rather than
equal; transformers' reading of the same file is the one that matches the store exactly (tests/test_gguf_space.py).
"""

import json

import numpy as np
import pytest

from paretopress.cli import main
from paretopress.job import JobSpec
from paretopress.run import run_job
from tests.support import job_yaml, make_tiny_architecture

pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra: make test-llamacpp")


@pytest.fixture(scope="module")
def llama(tmp_path_factory, text_files):
    return make_tiny_architecture("LlamaForCausalLM", tmp_path_factory.mktemp("llama"), text_files)


@pytest.mark.parametrize("space", [{"kind": "gguf", "bits": 5.0}, {"kind": "depth", "drop": 1}], ids=["gguf", "depth"])
def test_llama_cpp_runs_the_exported_file_with_the_stores_metrics(space, llama, text_files, tmp_path, capsys):
    import llama_cpp.llama_cpp as native

    spec = JobSpec.model_validate(job_yaml(llama, text_files, space=space, **{"strategy.generations": 1}))
    run_job(spec, tmp_path / "s.db", executor="local")
    capsys.readouterr()
    defaults = native.llama_model_default_params
    assert main(["export", "tiny", "--db", str(tmp_path / "s.db"), "--candidate", "best", "--out",
                 str(tmp_path / "out"), "--format", "gguf"]) == 0
    assert native.llama_model_default_params is defaults  # open_llama's AMX switch does not outlive the load
    assert "llama.cpp: held-out kl" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "paretopress.json").read_text())["metrics"]
    store, runtime = metrics["store"], metrics["llama.cpp"]
    assert runtime["ppl"] == pytest.approx(store["ppl"], rel=1e-3)  # measured: 5e-5 (gguf), 2e-6 (depth)
    assert runtime["kl"] == pytest.approx(store["kl"], rel=0.1, abs=1e-6)  # measured: 3% of 4e-6, 1e-4 of 3e-4


@pytest.mark.parametrize("imatrix", [False, True], ids=["reference", "imatrix"])
def test_every_type_writes_llama_cpps_own_bytes(imatrix, tmp_path):
    """Our codec against ggml's quantizers in the installed llama.cpp, bit for bit (benchmarks/gguf_types_check.py
    adds SmolLM2's matrices): every type without an importance matrix, and Q4_0, Q5_0 and Q8_0 with one."""
    from benchmarks.gguf_types_check import find_library, ggml_quantize, importance_of, load_ggml, synthetic_rows
    from paretopress.spaces.gguf_types import TYPES

    lib = load_ggml(find_library(None, tmp_path))
    kinds = [kind for kind in TYPES.values() if not imatrix or kind.weighted is not None or kind.name == "Q8_0"]
    for name, rows in synthetic_rows(np.random.default_rng(0)).items():
        importance = importance_of(rows, 0) if imatrix else None
        for kind in kinds:
            assert np.array_equal(kind.quantize(rows, importance), ggml_quantize(lib, kind, rows, importance)), \
                (kind.name, name)
