"""Candidate-evaluation throughput against a plain dense forward pass, and the error of the top-k KL, on SmolLM2.

Everything is measured in one run on one machine, so the ratios compare like with like:

- ``plain dense forward``: ``model(input_ids).logits`` over the tokens, nothing else; the floor any evaluator pays.
- ``evaluate dense genome``: the worker's full path (genome applied, forward, log-softmax, KL to the cached teacher,
  perplexity, parameter count) with nothing dropped; its ratio to the floor is our overhead.
- ``evaluate drop-N genome``: the same path for a genome that drops N blocks, as searched candidates do.

The top-k KL (``kl_per_token``) is a lower bound of the exact KL; the script reports both on held-out samples for a
few random genomes.

    .venv/bin/python benchmarks/throughput.py [--threads 2] [--samples 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from paretopress.evaluators.forward import batched_logits
from paretopress.evaluators.samples import HELDOUT, SampleSet
from paretopress.evaluators.teacher import compute_teacher
from paretopress.inputs.data import WIKI_SAMPLE, load_documents, pack_samples
from paretopress.inputs.models import load_model, load_tokenizer, quiet_transformers
from paretopress.search.strategies import Trial
from paretopress.search.worker import Worker
from paretopress.spaces.depth import DepthSpace
from paretopress.spaces.genome import Genome

MODEL = "smollm2-135m"


def median_seconds(paths: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each path; the paths take turns within every round, so machine noise hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(repeats + 1):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            if round_:  # round 0 warms up
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def plain_forward(model, tokens: torch.Tensor, batch_size: int) -> None:
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            model(input_ids=tokens[start:start + batch_size], use_cache=False)


def exact_kl(model, space: DepthSpace, genome: Genome, tokens, dense_logprobs, batch_size) -> float:
    with space.applied(model, genome) as candidate:
        total, count = 0.0, 0
        for rows, logits in batched_logits(candidate, tokens, batch_size):
            logprobs, teacher = torch.log_softmax(logits, -1), dense_logprobs[rows]
            total += float((teacher.exp() * (teacher - logprobs)).sum(-1).double().sum())
            count += logprobs.shape[0] * logprobs.shape[1]
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16, help="held-out samples of --seq-len tokens")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=128)
    parser.add_argument("--drop", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(args.threads)

    documents = load_documents(WIKI_SAMPLE)
    tokens = pack_samples(documents.heldout, load_tokenizer(MODEL), args.seq_len, args.samples)
    model = load_model(MODEL)
    teacher = compute_teacher(model, tokens, args.top_k, args.batch_size)
    space = DepthSpace(model, "block", args.drop)
    pools = {HELDOUT: SampleSet(tokens, teacher)}
    worker = Worker(partial(load_model, MODEL), space, pools, args.batch_size, args.threads)
    rng = np.random.default_rng(0)
    dropped = space.random_genome(rng)

    def trial(genome: Genome) -> Trial:
        return Trial(genome, HELDOUT, tuple(range(args.samples)), ("kl", "ppl", "params"), origin="benchmark")

    n_tokens = tokens.numel()
    seconds = median_seconds({
        "plain dense forward": lambda: plain_forward(model, tokens, args.batch_size),
        "evaluate dense genome": lambda: worker.evaluate(trial(space.dense())),
        f"evaluate drop-{args.drop} genome": lambda: worker.evaluate(trial(dropped)),
    }, args.repeats)
    base = seconds["plain dense forward"]
    print(f"SmolLM2-135M, {args.samples} x {args.seq_len} tokens, batch {args.batch_size}, {args.threads} threads, "
          f"median of {args.repeats}")
    print("| path | tokens/s | throughput vs plain dense forward |")
    print("|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {n_tokens / value:.0f} | {base / value:.2f}x |")

    with torch.inference_mode():
        batches = batched_logits(model, tokens, args.batch_size)
        dense_logprobs = torch.cat([torch.log_softmax(logits, -1) for _, logits in batches])
    print(f"\ntop-{args.top_k} KL against the exact full-vocabulary KL (held-out, random drop-{args.drop} genomes)")
    print("| genome | exact KL | top-k KL | relative gap |")
    print("|---|---|---|---|")
    for _ in range(4):
        genome = space.random_genome(rng)
        exact = exact_kl(model, space, genome, tokens, dense_logprobs, args.batch_size)
        approx = worker.evaluate(trial(genome)).values["kl"]
        dropped_blocks = ",".join(str(i) for i, level in enumerate(genome.levels) if level)
        print(f"| drop {dropped_blocks} | {exact:.5f} | {approx:.5f} | {(exact - approx) / exact:.2e} |")


if __name__ == "__main__":
    main()
