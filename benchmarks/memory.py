"""Peak memory per worker and candidate-evaluation throughput, on SmolLM2-135M and on a random-initialised model of
about 1B parameters with a 262,144-token vocabulary (Gemma-3-1B's shape in a Llama config), on this CPU.

Each row runs in a fresh process, so what it holds is its own: the model is loaded (or built), the teacher's outputs
computed on the samples (what the controller pays), and a worker built as the executors build one on that model,
which scores one selection stage: a parent and 3 of its offspring, each dropping ``--drop`` blocks, on ``--samples``
x ``--seq`` tokens at the row's batch size. A thread samples the process' resident memory every 5 ms; reported are
the memory after loading, the peak over it while computing the teacher's outputs and while scoring the stage, the
estimate ``paretopress run`` checks a job's batch against (``LOGIT_COPIES`` float32 logits of one batch), and
candidate tokens/s against a plain dense forward over the same tokens in the same process.

    .venv/bin/python benchmarks/memory.py [--models smollm2 large-vocab] [--batches 1 4] [--samples 4] [--seq 256]
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time

import numpy as np
import psutil
import torch

from paretopress.evaluators.samples import CALIBRATION, SampleSet
from paretopress.evaluators.teacher import compute_teacher
from paretopress.inputs.data import WIKI_SAMPLE, load_documents, pack_samples
from paretopress.inputs.models import load_model, load_tokenizer, quiet_transformers
from paretopress.run import LOGIT_COPIES
from paretopress.search.operators import distinct_offspring
from paretopress.search.strategies import Trial
from paretopress.search.worker import Worker
from paretopress.spaces.depth import DepthSpace

TAIL_SAMPLES = 2048
LARGE_VOCAB = {"vocab_size": 262_144, "hidden_size": 1152, "intermediate_size": 6912, "num_hidden_layers": 26,
               "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "tie_word_embeddings": True,
               "max_position_embeddings": 4096}
GIB = 2**30


class PeakMemory:
    """The most resident memory of this process while the ``with`` block runs, sampled every 5 ms."""

    def __init__(self) -> None:
        self.process, self.peak, self._running = psutil.Process(), 0, False

    def __enter__(self) -> PeakMemory:
        self.peak, self._running = self.process.memory_info().rss, True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *_) -> None:
        self._running = False
        self._thread.join()


def model_and_tokens(name: str, samples: int, seq: int) -> tuple[torch.nn.Module, torch.Tensor]:
    if name == "smollm2":
        documents = load_documents(WIKI_SAMPLE, heldout_fraction=0.1)
        tokens = pack_samples(documents.calibration, load_tokenizer("smollm2-135m"), seq, samples)
        return load_model("smollm2-135m"), tokens
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**LARGE_VOCAB), dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    return model, torch.randint(0, LARGE_VOCAB["vocab_size"], (samples, seq), generator=generator)


def row(name: str, batch: int, tail: int | None, args: argparse.Namespace, queue) -> None:
    """One measurement in this (fresh) process; its cells go back through ``queue``."""
    quiet_transformers()
    torch.set_num_threads(args.threads)
    model, tokens = model_and_tokens(name, args.samples, args.seq)
    params = sum(p.numel() for p in model.parameters())
    loaded = psutil.Process().memory_info().rss
    with PeakMemory() as teacher_peak:
        teacher = compute_teacher(model, tokens, 128, batch)
    space = DepthSpace(model, "block", args.drop)
    rng = np.random.default_rng(0)
    parent = space.random_genome(rng)
    genomes = [parent, *distinct_offspring(parent, space, 3, rng)]
    worker = Worker(lambda: model, space, {CALIBRATION: SampleSet(tokens, teacher)}, batch, args.threads,
                    tail_samples=tail)
    stage = [Trial(g, CALIBRATION, tuple(range(args.samples)), ("kl",), "benchmark") for g in genomes]
    worker.evaluate(stage[:1])  # warm-up
    with PeakMemory() as stage_peak:
        start = time.perf_counter()
        worker.evaluate(stage)
        stage_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, args.samples, batch):
            model(input_ids=tokens[first:first + batch], use_cache=False)
    dense_seconds = time.perf_counter() - start
    candidate_tokens = len(genomes) * tokens.numel()
    estimate = LOGIT_COPIES * 4 * batch * args.seq * model.config.vocab_size
    queue.put([name, f"{params / 1e9:.2f}B", f"{model.config.vocab_size:,}", batch,
               "exact" if tail is None else f"sampled {tail:,}", f"{loaded / GIB:.2f}",
               f"+{(teacher_peak.peak - loaded) / GIB:.2f}", f"+{(stage_peak.peak - loaded) / GIB:.2f}",
               f"{estimate / GIB:.2f}", f"{candidate_tokens / stage_seconds:.0f}",
               f"{(candidate_tokens / stage_seconds) / (tokens.numel() / dense_seconds):.2f}x"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=["smollm2", "large-vocab"], default=["smollm2", "large-vocab"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--drop", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("| model | params | vocabulary | batch | head | GiB after loading | teacher outputs' peak | stage's peak "
          "| logits estimate (GiB) | candidate tokens/s | vs plain dense forward |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    context = multiprocessing.get_context("spawn")
    for name in args.models:
        for batch in args.batches:
            for tail in (None, TAIL_SAMPLES):
                queue = context.Queue()
                process = context.Process(target=row, args=(name, batch, tail, args, queue))
                process.start()
                process.join()  # the row is a short list: the queue's pipe holds it until read
                if process.exitcode != 0:
                    raise SystemExit(f"{name}, batch {batch}: the measuring process exited with {process.exitcode}")
                cells = queue.get()
                print("| " + " | ".join(str(cell) for cell in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
