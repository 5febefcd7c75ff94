"""The second built-in model, the real Gemma 3 270M (another architecture, a BOS token, 262k vocabulary), end to end.

A depth search with its baselines, held-out reports and a transformers export re-measured equal to the store; the
samples start with Gemma's BOS token, without which its perplexity is about ten times higher.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretopress.inputs.data import bos_prefix
from paretopress.inputs.models import GEMMA3, load_tokenizer
from paretopress.job import JobSpec
from paretopress.report.export import export_candidate
from paretopress.run import run_job

pytestmark = pytest.mark.real

JOB = {
    "name": "gemma3-real",
    "model": GEMMA3,
    "data": "wiki-sample",
    "seed": 0,
    "space": {"kind": "depth", "drop": 2},
    "strategy": {"generations": 1, "offspring": 4, "seeds": {"baselines": ["shortgpt", "angular"], "random": 2},
                 "noise_draws": 0, "stages": [{"survivors": 2, "tokens": 128}, {"survivors": 1, "tokens": 256}]},
    "evaluation": {"seq_len": 64, "calibration_samples": 8, "heldout_samples": 4, "top_k": 32, "tail_samples": 256},
    "run": {"workers": 1, "threads_per_worker": 2, "batch_size": 4},
}


def test_gemma3_alias_starts_samples_with_bos():
    tokenizer = load_tokenizer(GEMMA3)
    assert bos_prefix(tokenizer) == [tokenizer.bos_token_id] == [2]


def test_depth_search_and_export_on_gemma3(tmp_path):
    db, out = tmp_path / "s.db", tmp_path / "export"
    outcome = run_job(JobSpec.model_validate(JOB), db, executor="local")
    dense, found = outcome.metrics["dense"], outcome.metrics["evopress"]
    assert 1 < dense["ppl"] < 80  # with its BOS token; without it Gemma measures 10x (34 vs 344 on 8 x 64 tokens)
    assert dense["ppl"] < found["ppl"] and 0 < found["kl"] < 3
    assert {"shortgpt", "angular"} <= set(outcome.metrics)
    assert sum(outcome.genomes["evopress"].levels) == 2

    report = export_candidate(db, "gemma3-real", "best", out)
    assert report.stored["kl"] == pytest.approx(found["kl"])
    assert report.relative_difference("kl") < 1e-3 and report.relative_difference("ppl") < 1e-3
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert exported.config.num_hidden_layers == 16
    assert len(exported.config.layer_types) == 16  # the kept layers' sliding / full pattern goes with them
