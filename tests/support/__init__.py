"""Helpers shared by the tests and benchmarks: job files, the tiny model and its text, and a check of refusals.

Tests import from here, never from each other (a test module's fixtures and parametrisations are its own).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import yaml

from paretopress.job import JobSpec
from paretopress.search.baselines.specs import BASELINES

WORDS = (
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "as", "with", "by", "at", "from", "that",
    "which", "river", "city", "music", "team", "school", "church", "station", "century", "war", "people",
    "film", "album", "song", "village", "county", "island", "language", "family", "player", "season", "line",
    "north", "south",
)


def synthetic_documents(count: int, words_per_doc: int, seed: int = 0) -> list[str]:
    """Deterministic word salad: enough tokens for a tiny model whose outputs are random anyway."""
    rng = np.random.default_rng(seed)
    return [
        " ".join(WORDS[i] for i in rng.integers(len(WORDS), size=words_per_doc)).capitalize() + "."
        for _ in range(count)
    ]


def write_text_files(folder: Path) -> list[Path]:
    """24 documents of synthetic text, one file each (a benchmark builds the same data as the tests)."""
    files = []
    for i, doc in enumerate(synthetic_documents(24, 400)):
        path = folder / f"doc{i:02d}.txt"
        path.write_text(doc)
        files.append(path)
    return files


def save_tokenizer(folder: Path, text_files: list[Path]):
    """A byte-level BPE tokenizer (320 entries) trained on the test text, saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train([str(p) for p in text_files], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>")
    fast.save_pretrained(folder)
    return fast


def make_tiny_model(folder: Path, text_files: list[Path]) -> Path:
    """A 6-layer random Llama (hidden 32) with a byte-level BPE tokenizer trained on the test text."""
    from transformers import LlamaConfig, LlamaForCausalLM

    fast = save_tokenizer(folder, text_files)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


_ATTENTION = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 256}
_GEMMA = {**_ATTENTION, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8,
          "layer_types": ["sliding_attention", "full_attention"] * 2}
TINY_ARCHITECTURES = {  # class name -> (config class, its settings): what makes each architecture itself
    "LlamaForCausalLM": ("LlamaConfig", _ATTENTION),
    "MistralForCausalLM": ("MistralConfig", {**_ATTENTION, "sliding_window": 8}),
    "Qwen2ForCausalLM": ("Qwen2Config", {**_ATTENTION, "tie_word_embeddings": False}),  # q/k/v biases
    "Qwen3ForCausalLM": ("Qwen3Config", {**_ATTENTION, "head_dim": 16}),  # q/k norms
    "Gemma2ForCausalLM": ("Gemma2Config", {**_GEMMA, "attn_logit_softcapping": 50.0,
                                           "final_logit_softcapping": 30.0}),
    "Gemma3ForCausalLM": ("Gemma3TextConfig", _GEMMA),
    "Phi3ForCausalLM": ("Phi3Config", {**_ATTENTION, "pad_token_id": 0}),  # fused qkv_proj and gate_up_proj
    "GPT2LMHeadModel": ("GPT2Config", {"n_embd": 64, "n_inner": 256, "n_layer": 4, "n_head": 4,
                                       "n_positions": 256}),  # Conv1D projections, attn / ln_1
}


def make_tiny_architecture(architecture: str, folder: Path, text_files: list[Path]) -> Path:
    """A random float32 ``architecture`` (a key of ``TINY_ARCHITECTURES``: 4 layers, hidden 64, seeded) with the
    tiny model's tokenizer, saved in ``folder``."""
    import transformers

    fast = save_tokenizer(folder, text_files)
    config_class, settings = TINY_ARCHITECTURES[architecture]
    config = getattr(transformers, config_class)(vocab_size=len(fast), eos_token_id=fast.eos_token_id,
                                                 bos_token_id=fast.eos_token_id, **settings)
    torch.manual_seed(0)
    getattr(transformers, architecture)(config).save_pretrained(folder)
    return folder


def job_yaml(tiny_model, text_files, **changes) -> dict:
    job = {
        "name": "tiny",
        "model": str(tiny_model),
        "data": {"path": "text", "data_files": [str(p) for p in text_files], "sample_by": "document"},
        "seed": 0,
        "space": {"kind": "depth", "drop": 2},
        "strategy": {"generations": 2, "offspring": 4, "stages": [{"survivors": 2, "tokens": 64},
                                                                  {"survivors": 1, "tokens": 128}]},
        "evaluation": {"seq_len": 32, "calibration_samples": 8, "heldout_samples": 4, "top_k": 16},
        "run": {"workers": 2, "batch_size": 4},
    }
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = job
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return job


DELETE = object()


def write(path: Path, job: dict) -> Path:
    path.write_text(yaml.safe_dump(job))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def make_job(tiny_model, text_files, **changes) -> JobSpec:
    job = job_yaml(tiny_model, text_files, **{"strategy.generations": 4, **changes})
    return JobSpec.model_validate(job)


class InterruptAfter:
    """Wraps the real executor and raises KeyboardInterrupt after ``limit`` results, like Ctrl-C mid-stage."""

    def __init__(self, executor, limit: int) -> None:
        self.executor, self.limit, self.seen = executor, limit, 0

    def run(self, trials):
        for item in self.executor.run(trials):
            if self.seen == self.limit:
                raise KeyboardInterrupt
            self.seen += 1
            yield item

    def close(self):
        self.executor.close()




def baseline(method: str, **settings):
    """The baseline ``method`` with its job-file settings (``lambda`` included), built."""
    return BASELINES[method](**settings).build()


def refused(good: dict, bad: dict, message: str, tmp_path: Path, capsys) -> None:
    """``paretopress run`` on ``bad`` against a store that holds the ``good`` study: one line naming ``message``,
    exit 2, and the store byte for byte as it was."""
    from paretopress.cli import main

    db = tmp_path / "existing.db"
    assert main(["run", str(write(tmp_path / "good.yaml", good)), "--db", str(db), "--executor", "local"]) == 0
    before = store_files(db)
    capsys.readouterr()
    assert main(["run", str(write(tmp_path / "bad.yaml", bad)), "--db", str(db), "--executor", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paretopress: error:") and message in err and "\n" not in err
    assert "Traceback" not in err and store_files(db) == before


def store_files(db: Path) -> tuple[str, str, str]:
    """Digests of the store and of its -wal and -shm files ("absent" for one that does not exist)."""
    return tuple(digest(db.with_name(db.name + suffix)) for suffix in ("", "-wal", "-shm"))


JOB = {
    "name": "smollm2-real",
    "model": "smollm2-135m",
    "data": "wiki-sample",
    "seed": 0,
    "space": {"kind": "depth", "drop": 3},
    "strategy": {"generations": 2, "offspring": 4, "stages": [{"survivors": 2, "tokens": 256},
                                                              {"survivors": 1, "tokens": 512}]},
    "evaluation": {"seq_len": 128, "calibration_samples": 16, "heldout_samples": 8, "top_k": 128},
    "run": {"workers": 2, "batch_size": 8},
}


SPARSITY = {"kind": "sparsity", "sparsity": 0.5, "builder": "wanda", "levels": 3, "calibration_samples": 8}
QUANT = {"kind": "quant", "bits": 3.5, "widths": [2, 3, 4], "group_size": 16, "builder": "gptq",
         "calibration_samples": 8}
