"""Searched configurations of SmolLM2-135M exported as files a runtime serves, re-measured from those files.

``gguf``: for each budget (average bits per weight over the decoder linears, as the file stores them), one study of
the gguf space: uniform and SPDY (its seeds) and EvoPress, confirmed on the Lee news articles at 512 tokens. The
uniform genome and the search's best are exported with ``--format gguf``; each file is loaded back by transformers
(metrics that must equal the store's) and, where llama-cpp-python is installed (``make test-llamacpp`` installs it),
run by llama.cpp on the same held-out samples.

``compressed-tensors``: one study of the quant space with the widths vLLM serves (4 and 8 bits, symmetric, groups of
64 columns, q/k/v and gate/up tied; 16 = dense) at ``--bits``; its best genome exported as a compressed-tensors
checkpoint and as a float transformers checkpoint, both loaded back by transformers.

Prints one markdown table per family.

    .venv/bin/python benchmarks/exports.py gguf --db runs/gguf.db --out runs/gguf-export [--bits 4.5 5.5]
        [--builder imatrix]   # levels weighted by the calibration inputs (Q4_0, Q5_0), as llama-quantize --imatrix
    .venv/bin/python benchmarks/exports.py compressed-tensors --db runs/ct.db --out runs/ct-export [--bits 6.0]
        [--generations 8]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from paretopress.inputs.models import quiet_transformers
from paretopress.job import JobSpec
from paretopress.report.export import ExportReport, export_candidate
from paretopress.run import DENSE, Outcome, run_job
from paretopress.store.store import Store

JOB = {"model": "smollm2-135m", "data": "wiki-sample", "seed": 0,
       "strategy": {"kind": "evopress", "generations": 8, "offspring": 8, "prescreen": 4, "noise_draws": 2,
                    "stages": [{"survivors": 2, "tokens": 1024}, {"survivors": 1, "tokens": 8192}]},
       "evaluation": {"seq_len": 256, "calibration_samples": 96, "heldout_samples": 32, "top_k": 128,
                      "heldout_data": "lee-news", "heldout_seq_len": 512},
       "front": {"cost": "bytes"},  # bits change no parameter count: the front and hypervolume count bytes
       "run": {"workers": 2, "threads_per_worker": 1, "batch_size": 8}}
SERVED = {"kind": "quant", "widths": [4, 8, 16], "group_size": 64, "builder": "gptq", "symmetric": True, "tie": True}
HEADER = ("| study | genome | bits | held-out KL | held-out ppl | news@512 KL | news@512 ppl | format | bytes "
          "| transformers KL vs store | llama.cpp KL | llama.cpp ppl |")


def study(db: str, name: str, space: dict, generations: int) -> Outcome:
    start = time.perf_counter()
    job = {"name": name, **JOB, "strategy": {**JOB["strategy"], "generations": generations}, "space": space}
    outcome = run_job(JobSpec.model_validate(job), db)
    print(f"{name}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return outcome


def rows(name: str, outcome: Outcome, exports: dict[str, list[ExportReport]]) -> list[str]:
    """One row per genome and export (a genome without one gets a row of its metrics alone)."""
    lines = []
    for label, values in outcome.metrics.items():
        if label == DENSE or label.startswith("initial"):
            continue
        other = outcome.confirmed.get(label, {})
        cells = [name, label, f"{outcome.costs[label]['bits']:.4f}", f"{values['kl']:.4f}", f"{values['ppl']:.2f}",
                 f"{other.get('kl', float('nan')):.4f}", f"{other.get('ppl', float('nan')):.2f}"]
        for fmt, report in exports.get(label, [("-", None)]):
            if report is None:
                lines.append("| " + " | ".join([*cells, *["-"] * 5]) + " |")
                continue
            runtime = report.runtime.get("llama.cpp", {})
            llama = [f"{runtime['kl']:.4f}", f"{runtime['ppl']:.2f}"] if runtime else ["-", "-"]
            measured = [fmt, f"{report.bytes:,}", f"{report.relative_difference('kl'):.1e}", *llama]
            lines.append("| " + " | ".join([*cells, *measured]) + " |")
    return lines


def exported(db: str, name: str, outcome: Outcome, out: Path, plan: dict[str, list[str]]) -> list[str]:
    """Export each planned genome in each of its formats; the table's rows."""
    exports = {label: [(fmt, export_candidate(db, name, str(outcome.candidates[label]), out / f"{name}-{label}-{fmt}",
                                              force=True, fmt=fmt)) for fmt in formats]
               for label, formats in plan.items()}
    return rows(name, outcome, exports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=["gguf", "compressed-tensors"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--bits", nargs="+", type=float)
    parser.add_argument("--builder", choices=["rtn", "imatrix"], default="rtn", help="gguf levels")
    parser.add_argument("--generations", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_transformers()
    table, volumes = [], []
    for bits in args.bits or ([4.5] if args.family == "gguf" else [6.0]):
        if args.family == "gguf":
            name = f"gguf-smollm2-{bits:g}" + ("" if args.builder == "rtn" else f"-{args.builder}")
            outcome = study(args.db, name, {"kind": "gguf", "bits": bits, "builder": args.builder},
                            args.generations)
            plan = {"uniform": ["gguf"], outcome.best: ["gguf"]}
        else:
            name = f"ct-smollm2-{bits:g}"
            outcome = study(args.db, name, {**SERVED, "bits": bits}, args.generations)
            plan = {outcome.best: ["compressed-tensors", "transformers"]}
        table += exported(args.db, name, outcome, args.out, plan)
        volumes.append(hypervolumes(args.db, name))
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    print("\n".join(table))
    print("\n".join(volumes))


def hypervolumes(db: str, name: str) -> str:
    """The study's hypervolume per generation, in (KL, bytes as a fraction of the dense genome's)."""
    with Store(db, readonly=True) as store:
        rows = store.hypervolumes(store.study(name).id)
    return f"{name}: hypervolume of ({', '.join(rows[0].objectives)}) by generation: " + ", ".join(
        f"{row.value:.4f}" for row in rows)


if __name__ == "__main__":
    main()
