"""The second built-in model, the real Gemma 3 270M (another architecture, a BOS token, 262k vocabulary), end to end.

A depth search with its baselines, held-out reports and a transformers export re-measured equal to the store; the
samples start with Gemma's BOS token, without which its perplexity is several times higher.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretopress.inputs.data import WIKI_SAMPLE, bos_prefix, load_documents, pack_samples
from paretopress.inputs.models import GEMMA3, load_model, load_tokenizer
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


def test_gemma3_samples_start_with_bos_which_the_model_needs():
    """Packed samples start with BOS; the same text without it measures several times the perplexity."""
    tokenizer = load_tokenizer(GEMMA3)
    assert bos_prefix(tokenizer) == [tokenizer.bos_token_id] == [2]
    tokens = pack_samples(load_documents(WIKI_SAMPLE).heldout, tokenizer, 64, 8)
    assert (tokens[:, 0] == 2).all()
    model = load_model(GEMMA3)
    with torch.inference_mode():
        with_bos, without = (model(input_ids=ids, labels=ids).loss.exp().item() for ids in (tokens, tokens[:, 1:]))
    assert with_bos * 5 < without


def test_depth_search_and_export_on_gemma3(tmp_path):
    db, out = tmp_path / "s.db", tmp_path / "export"
    outcome = run_job(JobSpec.model_validate(JOB), db, executor="local")
    dense, found = outcome.metrics["dense"], outcome.metrics["evopress"]
    assert 1 < dense["ppl"] < 80  # a base model on Wikipedia text, with its BOS token
    assert dense["ppl"] < found["ppl"] and 0 < found["kl"] < 3
    assert {"shortgpt", "angular"} <= set(outcome.metrics)
    assert sum(outcome.genomes["evopress"].levels) == 2

    report = export_candidate(db, "gemma3-real", "best", out)
    assert report.stored["kl"] == pytest.approx(found["kl"])
    assert report.relative_difference("kl") < 1e-3 and report.relative_difference("ppl") < 1e-3
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert exported.config.num_hidden_layers == 16
    assert len(exported.config.layer_types) == 16  # the kept layers' sliding / full pattern goes with them
