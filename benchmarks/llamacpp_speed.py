"""llama.cpp prompt and generation speed of GGUF files on this CPU, measured in one run (llama-cpp-python).

Each file: a 256-token prompt of held-out Wikipedia text evaluated in one batch, then 64 tokens generated greedily,
both repeated ``--repeats`` times after a warm-up, in turn across the files so that a shared machine's load spreads
over all of them; the medians and their ratios to the first file are printed as a markdown table.

    .venv/bin/python benchmarks/llamacpp_speed.py runs/gguf-export/*/model.gguf [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from llama_cpp import Llama

from paretopress.inputs.data import load_documents
from paretopress.inputs.models import load_tokenizer
from paretopress.report.llamacpp import open_llama

PROMPT, NEW = 256, 64


def prompt_tokens() -> list[int]:
    documents = load_documents("wiki-sample", heldout_fraction=0.1)
    text = " ".join(documents.heldout[:3])
    return load_tokenizer("smollm2-135m")(text)["input_ids"][:PROMPT]


def timed(llm: Llama, tokens: list[int]) -> tuple[float, float]:
    """Seconds of the prompt's evaluation and of ``NEW`` greedy decoding steps."""
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    prompt = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(NEW):
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
    return prompt, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tokens = prompt_tokens()
    models = {path: open_llama(path, n_ctx=PROMPT + NEW, n_batch=PROMPT + NEW, n_threads=args.threads)
              for path in args.files}
    times: dict[Path, list[tuple[float, float]]] = {path: [] for path in args.files}
    for round_index in range(args.repeats + 1):
        for path, llm in models.items():
            measured = timed(llm, tokens)
            if round_index:  # the first round warms up
                times[path].append(measured)
    print("| file | bytes | prompt tokens/s | generation tokens/s | prompt vs first | generation vs first |")
    print("|---|---|---|---|---|---|")
    first = None
    for path, rounds in times.items():
        prompt = PROMPT / statistics.median(t for t, _ in rounds)
        generation = NEW / statistics.median(t for _, t in rounds)
        first = first or (prompt, generation)
        print(f"| {path.parent.name}/{path.name} | {path.stat().st_size:,} | {prompt:.0f} | {generation:.1f} | "
              f"{prompt / first[0]:.2f}x | {generation / first[1]:.2f}x |")
    for llm in models.values():
        llm.close()


if __name__ == "__main__":
    main()
