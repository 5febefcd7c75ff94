"""Which kernel settings pay for candidate evaluation on this CPU: threads, batch shape, bfloat16, torch.compile.

Plain forward passes of SmolLM2-135M over the same 16 x 128 Wikipedia tokens, the settings taking turns in every
round (median of the rounds after a warm-up one, which also absorbs compilation). A setting is worth applying in the
worker only where its ratio to the float32 baseline clearly exceeds the machine's noise.

    .venv/bin/python benchmarks/cpu_settings.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the throughput benchmark's timing helpers
from throughput import median_seconds, plain_forward

from paretopress.inputs.data import WIKI_SAMPLE, load_documents, pack_samples
from paretopress.inputs.models import load_model, load_tokenizer, quiet_transformers

MODEL = "smollm2-135m"


def with_threads(count: int, run):
    def call():
        before = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            return run()
        finally:
            torch.set_num_threads(before)
    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    quiet_transformers()
    tokens = pack_samples(load_documents(WIKI_SAMPLE).heldout, load_tokenizer(MODEL), 128, 16)
    model = load_model(MODEL)
    half = copy.deepcopy(model).to(torch.bfloat16)
    compiled = torch.compile(copy.deepcopy(model), dynamic=False)
    paths = {}
    for threads in (1, 2):
        for batch in (4, 8, 16):
            paths[f"float32, {threads} thread(s), batch {batch}"] = with_threads(
                threads, lambda b=batch: plain_forward(model, tokens, b))
        paths[f"bfloat16, {threads} thread(s), batch 8"] = with_threads(threads, lambda: plain_forward(half, tokens, 8))
        paths[f"torch.compile float32, {threads} thread(s), batch 8"] = with_threads(
            threads, lambda: plain_forward(compiled, tokens, 8))
    seconds = median_seconds(paths, args.repeats)
    print(f"SmolLM2-135M plain forward, {tokens.shape[0]} x {tokens.shape[1]} tokens, median of {args.repeats}; "
          f"bf16 supported by this CPU's kernels: {torch.backends.mkldnn.is_available()}")
    print("| setting | tokens/s | vs float32 at the same threads, batch 8 |")
    print("|---|---|---|")
    for name, value in seconds.items():
        threads = name.split(", ")[1]
        base = seconds[f"float32, {threads}, batch 8"]
        print(f"| {name} | {tokens.numel() / value:.0f} | {base / value:.2f}x |")


if __name__ == "__main__":
    main()
