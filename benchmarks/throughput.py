"""Candidate-evaluation throughput against a plain dense forward pass, and the error of the top-k KL, on SmolLM2.

Everything is measured in one run on one machine, so the ratios compare like with like:

- ``plain dense forward``: ``model(input_ids).logits`` over the tokens, nothing else; the floor any evaluator pays.
- ``evaluate dense genome``: the worker's full path (genome applied, forward, log-softmax, KL to the cached teacher,
  perplexity, parameter count) with nothing dropped; its ratio to the floor is our overhead.
- ``evaluate drop-N genome``: the same path for a genome that drops N blocks, as searched candidates do.

The top-k KL (``kl_per_token``) is a lower bound of the exact KL; the script reports both on held-out samples for a
few random genomes.

Then the search's real access pattern (``--stages``): one EvoPress generation at the demo's settings, the 8 offspring
of one parent on 512 tokens, then 2 survivors and the parent on 2,048 fresh tokens, scored by KL. Candidate tokens
per second (each candidate's tokens counted once) for a plain dense forward over the same tokens, the candidates
one by one, and each stage as one job sharing prefixes (``search/stage.py``); for the depth and sparsity spaces of
SmolLM2 and for depth on a random-initialised SmolLM2-shaped model with a 262,144-token vocabulary. Where a stage's
time goes: the decoder blocks it runs against those of the candidates one by one (what sharing saves), and the share
of its CPU time that torch's profiler finds in matrix products (what no exact sharing of blocks can save).

``--head-only``: the sampled head's logits at the teacher's top-k ids and each next token (``tail_samples``) as
gathered head rows against one sampled dense-dense product, on SmolLM2's real head and teacher ids.

    .venv/bin/python benchmarks/throughput.py [--threads 2] [--samples 16] [--repeats 5] [--stages-only]
        [--head-only]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from paretopress.evaluators.forward import batched_logits, gathered_logits, sampled_product_logits
from paretopress.evaluators.samples import CALIBRATION, HELDOUT, SampleSet
from paretopress.evaluators.teacher import compute_teacher
from paretopress.inputs.data import WIKI_SAMPLE, load_documents, pack_samples
from paretopress.inputs.models import load_model, load_tokenizer, quiet_transformers
from paretopress.job import load_job
from paretopress.run import build_space
from paretopress.search.operators import distinct_offspring
from paretopress.search.strategies import Trial
from paretopress.search.worker import Worker
from paretopress.spaces.anatomy import read_anatomy
from paretopress.spaces.base import Space
from paretopress.spaces.depth import DepthSpace
from paretopress.spaces.genome import Genome

MODEL = "smollm2-135m"
SURVIVORS = (2, 1)  # what each stage of the demo keeps
PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm")  # the matrix products among the profiler's operators


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


def block_forwards(worker: Worker, jobs: list[list[Trial]]) -> int:
    """Decoder blocks the worker runs to score ``jobs`` (counted by forward pre-hooks on the model's layers)."""
    count = 0

    def counted(*_) -> None:
        nonlocal count
        count += 1

    handles = [layer.register_forward_pre_hook(counted) for layer in read_anatomy(worker.model).layers(worker.model)]
    try:
        for job in jobs:
            worker.evaluate(job)
    finally:
        for handle in handles:
            handle.remove()
    return count


def product_share(run: Callable[[], object]) -> float:
    """The share of ``run``'s CPU time that torch's profiler finds in matrix products."""
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        run()
    events = profiled.key_averages()
    return sum(e.self_cpu_time_total for e in events if e.key in PRODUCTS) / sum(e.self_cpu_time_total for e in events)


def generation(space: Space, rng: np.random.Generator) -> list[list[Trial]]:
    """One EvoPress generation at the demo's stages: 8 offspring on 4 samples, 2 survivors + parent on 16 more."""
    parent = space.start() or space.random_genome(rng)
    offspring = distinct_offspring(parent, space, 8, rng)
    return [[Trial(g, CALIBRATION, tuple(range(4)), ("kl",), "benchmark") for g in offspring],
            [Trial(g, CALIBRATION, tuple(range(4, 20)), ("kl",), "benchmark") for g in [*offspring[:2], parent]]]


def stage_table(name: str, model, space: Space, tokens: torch.Tensor, args) -> None:
    """Candidate tokens/s of one generation: plain dense forwards, one by one, stage by stage (float32, then with the
    sampled head and in bfloat16), and each approximation's KL error and ranking against the exact float32 KL."""
    teacher = compute_teacher(model, tokens, args.top_k, args.batch_size)
    pools = {CALIBRATION: SampleSet(tokens, teacher)}
    sampled = f"head at teacher ids + {args.tail_samples:,} sampled"
    workers = {settings: Worker(lambda: copy.deepcopy(model), space, pools, args.batch_size, args.threads,
                                tail_samples=tail, dtype=dtype)
               for settings, tail, dtype in (("float32", None, "float32"), (f"float32, {sampled}", args.tail_samples,
                                             "float32"), ("bfloat16", None, "bfloat16"),
                                             (f"bfloat16, {sampled}", args.tail_samples, "bfloat16"))}
    exact = workers["float32"]
    stages = generation(space, np.random.default_rng(0))
    trials = [t for stage in stages for t in stage]
    n_tokens = sum(len(t.samples) for t in trials) * tokens.shape[1]
    paths = {"plain dense forward": lambda: [plain_forward(model, tokens[list(t.samples)], args.batch_size)
                                             for t in trials],
             "candidates one by one": lambda: [exact.evaluate([t]) for t in trials]}
    paths.update({f"each stage as one job, {settings}": lambda w=worker: [w.evaluate(stage) for stage in stages]
                  for settings, worker in workers.items()})
    seconds = median_seconds(paths, args.repeats)
    kl = {settings: [[r.values["kl"] for r in worker.evaluate(stage)] for stage in stages]
          for settings, worker in workers.items()}
    alone = [exact.evaluate([t])[0].values["kl"] for t in trials]
    base = seconds["plain dense forward"]
    for path, value in seconds.items():
        print(f"| {name} | {path} | {n_tokens / value:.0f} | {base / value:.2f}x |")
    flat = [value for stage in kl["float32"] for value in stage]
    print(f"| {name} | stage vs one by one: largest relative difference "
          f"{max(abs(a - b) / abs(b) for a, b in zip(flat, alone, strict=True)):.1e}; kept streams at most "
          f"{exact.stage.branch_bytes / 2**20:.1f} MiB | | |")
    one_by_one = block_forwards(exact, [[t] for t in trials])
    shared = block_forwards(exact, stages)
    share = product_share(lambda: [workers[f"float32, {sampled}"].evaluate(stage) for stage in stages])
    print(f"| {name} | where the stage's time goes: {shared} block forwards against {one_by_one} one by one "
          f"({1 - shared / one_by_one:.0%} shared); matrix products {share:.0%} of the CPU time with the sampled head "
          "| | |")
    for settings in list(workers)[1:]:
        approx = [value for stage in kl[settings] for value in stage]
        error = max(abs(a - b) / abs(b) for a, b in zip(approx, flat, strict=True))
        ranked = [np.argsort(a).tolist() == np.argsort(x).tolist()
                  for a, x in zip(kl[settings], kl["float32"], strict=True)]
        kept = [np.argsort(a)[:n].tolist() == np.argsort(x)[:n].tolist()
                for a, x, n in zip(kl[settings], kl["float32"], SURVIVORS, strict=True)]
        print(f"| {name} | {settings} KL vs exact float32: largest relative error {error:.1e}; the same survivors "
              f"in {sum(kept)} of 2 stages, the same full ranking in {sum(ranked)} of 2 | | |")


def large_vocabulary_model(vocab: int):
    """SmolLM2-135M's shape with a Gemma-sized vocabulary, random weights (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def stages(args) -> None:
    documents = load_documents(WIKI_SAMPLE)
    tokens = pack_samples(documents.heldout, load_tokenizer(MODEL), args.seq_len, 20)
    model = load_model(MODEL)
    print(f"\none EvoPress generation (8 offspring x 512 tokens, then 3 x 2,048), batch {args.batch_size}, "
          f"{args.threads} threads, median of {args.repeats}")
    print("| model, space | path | candidate tokens/s | vs plain dense forward |")
    print("|---|---|---|---|")
    stage_table("SmolLM2-135M, depth drop 6", model, DepthSpace(model, "block", args.drop), tokens, args)
    sparsity = build_space(load_job("examples/smollm2-sparsity50.yaml"), model)
    stage_table("SmolLM2-135M, sparsity 0.5 (wanda)", model, sparsity, tokens, args)
    large = large_vocabulary_model(args.large_vocab)
    random_tokens = torch.randint(0, args.large_vocab, tokens.shape, generator=torch.Generator().manual_seed(0))
    stage_table(f"random init, vocab {args.large_vocab:,}, depth drop 6", large,
                DepthSpace(large, "block", args.drop), random_tokens, args)


def head_table(args) -> None:
    """Seconds of the logits at the teacher's ids for one batch, gathered against the sampled product."""
    documents = load_documents(WIKI_SAMPLE)
    model = load_model(MODEL)
    weight = model.get_output_embeddings().weight.detach()
    print(f"\nlogits at the teacher's top-{args.top_k} ids, one batch of {args.batch_size} samples, {args.threads} "
          f"threads, median of {args.repeats}")
    print("| tokens | gathered head rows (s) | sampled dense-dense product (s) | speedup | largest relative "
          "difference |")
    print("|---|---|---|---|---|")
    for seq in (128, 256):
        tokens = pack_samples(documents.heldout, load_tokenizer(MODEL), seq, args.batch_size)
        teacher = compute_teacher(model, tokens, args.top_k, args.batch_size)
        with torch.inference_mode():
            hidden = model.get_decoder()(input_ids=tokens, use_cache=False).last_hidden_state
        rows = hidden.reshape(-1, hidden.shape[-1]).float()
        ids = teacher.top_ids.long().reshape(rows.shape[0], -1)
        paths = {"gathered": partial(gathered_logits, rows, weight, ids, 256),
                 "sampled": partial(sampled_product_logits, rows, weight, ids)}
        seconds = median_seconds(paths, args.repeats)
        gathered, sampled = paths["gathered"](), paths["sampled"]()
        difference = float((gathered - sampled).abs().max() / gathered.abs().max())
        print(f"| {tokens.numel():,} | {seconds['gathered']:.3f} | {seconds['sampled']:.3f} | "
              f"{seconds['gathered'] / seconds['sampled']:.1f}x | {difference:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16, help="held-out samples of --seq-len tokens")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=128)
    parser.add_argument("--drop", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large-vocab", type=int, default=262_144)
    parser.add_argument("--tail-samples", type=int, default=2048, help="sampled vocabulary entries of the estimate")
    parser.add_argument("--stages-only", action="store_true", help="only the access pattern of a search")
    parser.add_argument("--head-only", action="store_true", help="only the sampled head's logits at given ids")
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(args.threads)
    if args.head_only:
        head_table(args)
        return
    if args.stages_only:
        stages(args)
        return

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
        "evaluate dense genome": lambda: worker.evaluate([trial(space.dense())]),
        f"evaluate drop-{args.drop} genome": lambda: worker.evaluate([trial(dropped)]),
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
        approx = worker.evaluate([trial(genome)])[0].values["kl"]
        dropped_blocks = ",".join(str(i) for i, level in enumerate(genome.levels) if level)
        print(f"| drop {dropped_blocks} | {exact:.5f} | {approx:.5f} | {(exact - approx) / exact:.2e} |")
    stages(args)


if __name__ == "__main__":
    main()
