"""Shared fixtures: a tiny random-init Llama with its own tokenizer, text files, one local Ray cluster per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # unknown model ids fail at once instead of retrying a network
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

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


@pytest.fixture(scope="session")
def text_files(tmp_path_factory) -> list[Path]:
    return write_text_files(tmp_path_factory.mktemp("text"))


def write_text_files(folder: Path) -> list[Path]:
    """24 documents of synthetic text, one file each (a benchmark builds the same data as the tests)."""
    files = []
    for i, doc in enumerate(synthetic_documents(24, 400)):
        path = folder / f"doc{i:02d}.txt"
        path.write_text(doc)
        files.append(path)
    return files


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, text_files) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), text_files)


def make_tiny_model(folder: Path, text_files: list[Path]) -> Path:
    """A 6-layer random Llama (hidden 32) with a byte-level BPE tokenizer trained on the test text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train([str(p) for p in text_files], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>")
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the whole session: ray.init costs seconds."""
    import ray

    from paretopress.search.executor import connect_ray

    connect_ray(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch, request):
    """Tiny-model tests get a session-private cache; tests marked `real` share the user's cache (model, text)."""
    if "real" not in request.keywords:
        monkeypatch.setenv("PARETOPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_model, text_files) -> Path:
    """A store with two finished studies of the tiny model (blocks, and sub-layers), for tests that only read."""
    from paretopress.search.runner import run_job
    from tests.test_runner import make_job

    db = tmp_path_factory.mktemp("store") / "tiny.db"
    with pytest.MonkeyPatch.context() as patch:  # the per-test cache fixture does not reach session fixtures
        patch.setenv("PARETOPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        run_job(make_job(tiny_model, text_files), db, executor="local")
        run_job(make_job(tiny_model, text_files, name="tiny-sub", **{"space.granularity": "sublayer",
                                                                       "space.drop": 3, "strategy.generations": 2}),
                db, executor="local")
    return db
