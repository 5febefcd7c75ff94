"""Level databases on SmolLM2-135M: build time, size on disk and resident size per builder, against the naive
"one full-precision copy per level" layout, all measured in one run.

- ``build``: calibration statistics (X^T X of every linear's input, for the builders that need them) plus every
  unit's levels, plus writing the file and its content hash.
- ``disk``: the safetensors file. The naive layout is every level of every unit as a float32 tensor.
- ``resident``: in a fresh process that has loaded the model, growth of the resident set (VmRSS) when the
  database is opened and the uniform genome is assembled and run on 16 tokens (mapped pages touched plus tensors
  computed on assembly: masks applied or codes dequantized), and the seconds that first assembly took. A naive
  database would map one float32 copy per assembled level: the model's linear weights once.

    .venv/bin/python benchmarks/leveldb.py [--builders magnitude wanda sparsegpt rtn gptq] [--levels 4]
        [--widths 2 3 4 5 6] [--samples 32] [--seq-len 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from paretopress.inputs.data import WIKI_SAMPLE, load_documents, pack_samples
from paretopress.inputs.levels import build_levels, write_database
from paretopress.inputs.models import load_model, load_tokenizer, quiet_transformers
from paretopress.spaces.database import LevelDatabase
from paretopress.spaces.linear import LinearSpace
from paretopress.spaces.quant import QuantSpace
from paretopress.spaces.sparsity import SparsitySpace

MODEL = "smollm2-135m"
MIB = 2**20


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_space(builder: str, model, args: argparse.Namespace) -> LinearSpace:
    if builder in ("rtn", "gptq"):
        return QuantSpace(model, 3.0, args.widths, builder)
    return SparsitySpace(model, args.sparsity, builder, args.levels)


def resident(args: argparse.Namespace) -> None:
    """Child mode: open the database at ``args.resident`` and assemble the uniform genome; print bytes and seconds."""
    model = load_model(MODEL)
    space = make_space(args.builders[0], model, args)
    tokens = torch.zeros(1, 16, dtype=torch.long)
    with torch.inference_mode():
        model(input_ids=tokens)  # the model's own weights become resident first: a worker holds them anyway
    gc.collect()
    before = resident_bytes()
    space.attach(LevelDatabase(args.resident, space.builder))
    start = time.perf_counter()
    with space.applied(model, space.uniform()) as candidate, torch.inference_mode():
        assembly = time.perf_counter() - start
        candidate(input_ids=tokens)  # touches every weight, so mapped pages count as resident
        print(resident_bytes() - before, assembly)


def measure(space: LinearSpace, model, tokens, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    start = time.perf_counter()
    tensors = build_levels(space, model, tokens if space.needs_calibration else None, batch_size=8)
    path = folder / f"{space.builder}.safetensors"
    write_database(path, space.builder, tensors)
    build = time.perf_counter() - start
    del tensors
    child = subprocess.run(
        [sys.executable, __file__, "--resident", str(path), "--builders", space.builder, "--sparsity",
         str(args.sparsity), "--levels", str(args.levels), "--widths", *map(str, args.widths)],
        check=True, capture_output=True, text=True,
    )
    grown, assembly = child.stdout.split()
    naive_disk = 4 * sum(n * levels for n, levels in zip(space.numels, space.num_levels, strict=True))
    return {"build": build, "disk": path.stat().st_size, "naive_disk": naive_disk, "resident": int(grown),
            "naive_resident": 4 * sum(space.numels), "assembly": float(assembly),
            "levels": sum(space.num_levels) / len(space.units)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builders", nargs="+", default=["magnitude", "wanda", "sparsegpt", "rtn", "gptq"])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--levels", type=int, default=4, help="sparsity levels either side of the budget")
    parser.add_argument("--widths", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resident", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_transformers()
    if args.resident:
        resident(args)
        return
    model = load_model(MODEL)
    documents = load_documents(WIKI_SAMPLE)
    tokens = pack_samples(documents.calibration, load_tokenizer(MODEL), args.seq_len, args.samples)
    print(f"SmolLM2-135M, {args.samples} calibration samples of {args.seq_len} tokens, {args.threads} threads; "
          f"sparsity {args.sparsity} with {args.levels} levels either side, bit-widths {args.widths}\n")
    print("| builder | levels per unit (mean) | build s | disk MiB | naive disk MiB | disk ratio | resident MiB "
          "| naive resident MiB | first assembly s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for builder in args.builders:
            m = measure(make_space(builder, model, args), model, tokens, Path(folder), args)
            print(f"| {builder} | {m['levels']:.1f} | {m['build']:.1f} | {m['disk'] / MIB:.0f} | "
                  f"{m['naive_disk'] / MIB:.0f} | {m['disk'] / m['naive_disk']:.3f} | {m['resident'] / MIB:.0f} | "
                  f"{m['naive_resident'] / MIB:.0f} | {m['assembly']:.2f} |", flush=True)
            (Path(folder) / f"{builder}.safetensors").unlink()


if __name__ == "__main__":
    main()
