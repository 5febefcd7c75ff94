"""GGUF types searched per tensor on SmolLM2-135M, exported as .gguf files and run by transformers and by llama.cpp.

For each budget (average bits per weight over the decoder linears, as the file stores them), one study of the gguf
space: uniform and SPDY (its seeds) and EvoPress, confirmed on the Lee news articles at 512 tokens. The uniform
genome and the search's best are exported with ``--format gguf``; each file is loaded back by transformers (metrics
that must equal the store's) and, where llama-cpp-python is installed (``make test-llamacpp`` installs it), run by
llama.cpp on the same held-out samples. Prints one markdown table.

    .venv/bin/python benchmarks/gguf_export.py --db runs/gguf.db --out runs/gguf-export [--bits 4.5 5.5]
        [--builder imatrix]   # levels weighted by the calibration inputs (Q4_0, Q5_0), as llama-quantize --imatrix
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from paretopress.inputs.models import quiet_transformers
from paretopress.job import JobSpec
from paretopress.report.export import export_candidate
from paretopress.run import DENSE, run_job

JOB = {"model": "smollm2-135m", "data": "wiki-sample", "seed": 0,
       "strategy": {"kind": "evopress", "generations": 8, "offspring": 8, "prescreen": 4, "noise_draws": 2,
                    "stages": [{"survivors": 2, "tokens": 1024}, {"survivors": 1, "tokens": 8192}]},
       "evaluation": {"seq_len": 256, "calibration_samples": 96, "heldout_samples": 32, "top_k": 128,
                      "heldout_data": "lee-news", "heldout_seq_len": 512},
       "run": {"workers": 2, "threads_per_worker": 1, "batch_size": 8}}


def study(db: str, out: Path, bits: float, builder: str) -> list[str]:
    name = f"gguf-smollm2-{bits:g}" + ("" if builder == "rtn" else f"-{builder}")
    job = JobSpec.model_validate({"name": name, **JOB, "space": {"kind": "gguf", "bits": bits, "builder": builder}})
    start = time.perf_counter()
    outcome = run_job(job, db)
    print(f"{name}: done in {time.perf_counter() - start:.0f} s", flush=True)
    exports = {}
    for label in ("uniform", outcome.best):
        report = export_candidate(db, name, str(outcome.candidates[label]), out / f"{name}-{label}", force=True,
                                  fmt="gguf")
        exports[label] = report
    lines = []
    for label, values in outcome.metrics.items():
        if label == DENSE or label.startswith("initial"):
            continue
        other = outcome.confirmed.get(label, {})
        cells = [name, label, f"{outcome.costs[label]['bits']:.4f}", f"{values['kl']:.4f}", f"{values['ppl']:.2f}",
                 f"{other.get('kl', float('nan')):.4f}", f"{other.get('ppl', float('nan')):.2f}"]
        report = exports.get(label)
        if report is None:
            cells += ["-"] * 4
        else:
            runtime = report.runtime.get("llama.cpp", {})
            cells += [f"{report.bytes:,}", f"{report.relative_difference('kl'):.1e}",
                      f"{runtime['kl']:.4f}" if runtime else "not installed",
                      f"{runtime['ppl']:.2f}" if runtime else "not installed"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--bits", nargs="+", type=float, default=[4.5])
    parser.add_argument("--builder", choices=["rtn", "imatrix"], default="rtn")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_transformers()
    table = [line for bits in args.bits for line in study(args.db, args.out, bits, args.builder)]
    print("| study | genome | bits | held-out KL | held-out ppl | news@512 KL | news@512 ppl | .gguf bytes "
          "| transformers KL vs store | llama.cpp KL | llama.cpp ppl |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
