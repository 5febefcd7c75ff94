"""Speedup targets on SmolLM2-135M: width search, uniform width and depth-only pruning, exported and timed end to end.

    .venv/bin/python benchmarks/speedup.py [--job examples/smollm2-speedup.yaml] [--db runs/speedup.db]
        [--out runs/speedup] [--repeats 30]

1. `examples/smollm2-speedup.yaml`: the latency table is measured on this machine into the store (batch 1 x 128
   tokens, 1 thread), then EvoPress searches the width space at each target (1.25x, 1.5x, 2x) from the uniform genome
   ("initial": every attention at one width and every MLP at one width, the least pruned such pair within the budget).
2. Depth only: for each target, the fewest blocks whose removal reaches it by the same table; one EvoPress depth
   sweep over those counts, with the width job's data, evaluation and strategy settings.
3. Every result is exported as a checkpoint (`export_candidate`, which re-measures held-out KL and perplexity on the
   reloaded model), and the dense model and all exports are timed end to end in one run: batch 1 x 128 tokens, the
   table's thread count, every model once per round in a shuffled order. Speedup: the median over rounds of the
   dense model's time over the model's time in the same round.

Writes a JSON summary next to the exports and prints the Markdown table of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from paretopress.inputs.models import load_model, quiet_transformers
from paretopress.job import JobSpec, load_job
from paretopress.profile import Setting, model_key, time_table, timed_rounds
from paretopress.report.export import export_candidate
from paretopress.run import DENSE, run_job
from paretopress.spaces import pruned
from paretopress.spaces.width import WidthSpace
from paretopress.store.store import Store

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "smollm2-speedup.yaml"


def depth_job(width: JobSpec, drops: list[int]) -> JobSpec:
    """The width job's settings with the depth space at these block counts."""
    spec = width.model_dump(mode="json")
    spec.update(name=f"{width.name}-depth", space={"kind": "depth", "drop": drops})
    return JobSpec.model_validate(spec)


def blocks_for(width: JobSpec, db: Path) -> tuple[dict[float, int], dict[int, float]]:
    """Per target, the fewest blocks (attention + MLP at full width, by the store's table) that reach it; and the
    table's estimated speedup of dropping each of those counts."""
    model = load_model(width.model)
    space = WidthSpace(model, width.space.heads, width.space.channels, "magnitude", width.space.multiple)
    setting = Setting.from_spec(width.space.latency)
    with Store(db, readonly=True) as store:
        times = time_table(space, store.latencies(*setting.key()), model_key(model, width.model), setting.name)
    block = times.seconds[0][0] + times.seconds[1][0]
    drops = {s: math.ceil((times.dense - times.dense / s) / block) for s in width.space.speedups}
    return drops, {d: times.dense / (times.dense - d * block) for d in drops.values()}


def candidate_id(db: Path, study: str, genome_key: str) -> int:
    with Store(db, readonly=True) as store:
        study_id = store.study(study).id
        return next(c.id for c in store.candidates(study_id) if c.genome_key == genome_key)


def speedups(paths: dict[str, Path | None], spec: str, threads: int, seq: int, repeats: int
             ) -> tuple[float, dict[str, float]]:
    """Median seconds of the dense model's forward pass (``paths[label]`` None), and every model's speedup over it:
    the median over rounds of the dense time over the model's time in the same round (the models take turns)."""
    torch.set_num_threads(threads)
    models = {}
    for label, path in paths.items():
        if path is None:
            models[label] = load_model(spec)
            continue
        remote = pruned.LAYOUT in json.loads((path / "config.json").read_text())  # per-layer widths: the loader
        models[label] = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                             trust_remote_code=remote).eval()
    tokens = torch.randint(0, 49152, (1, seq), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        rounds = timed_rounds({(label, 0): (lambda m=m: m(input_ids=tokens, use_cache=False))
                               for label, m in models.items()}, repeats)
    dense = rounds.pop((DENSE, 0))
    return statistics.median(dense), {label: statistics.median(np.divide(dense, times))
                                      for (label, _), times in rounds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", default=str(EXAMPLE), help="a width job with speedup targets")
    parser.add_argument("--db", default="runs/speedup.db")
    parser.add_argument("--out", default="runs/speedup")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds of the end-to-end comparison")
    args = parser.parse_args()
    quiet_transformers()
    db, out = Path(args.db), Path(args.out)
    db.parent.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    width = load_job(args.job)
    seconds, outcomes = {}, {}
    start = time.perf_counter()
    outcomes["width"] = run_job(width, db)
    seconds["width"] = time.perf_counter() - start
    drops, depth_estimates = blocks_for(width, db)
    depth = depth_job(width, sorted(set(drops.values())))
    start = time.perf_counter()
    outcomes["depth"] = run_job(depth, db)
    seconds["depth"] = time.perf_counter() - start

    rows = []
    for target in width.space.speedups:
        chosen = {"evopress width": ("width", f"evopress speedup={target:g}"),
                  "uniform width": ("width", f"initial speedup={target:g}"),
                  "evopress depth": ("depth", f"evopress drop={drops[target]}" if len(set(drops.values())) > 1
                                     else "evopress")}
        for method, (which, label) in chosen.items():
            outcome = outcomes[which]
            path = out / f"{method.replace(' ', '-')}-{target:g}"
            report = export_candidate(db, outcome.name, str(candidate_id(db, outcome.name, outcome.genomes[label].key)),
                                      path, force=True)
            estimated = outcome.costs[label].get("speedup", depth_estimates.get(drops[target]))
            rows.append({"target": target, "method": method, "label": label, "path": str(path),
                         "estimated": estimated, "params": report.measured["params"],
                         "ppl": report.measured["ppl"], "kl": report.measured["kl"]})
    dense_seconds, measured = speedups({DENSE: None, **{f"{r['method']} {r['target']:g}": Path(r["path"])
                                                         for r in rows}},
                                       width.model, width.space.latency.threads, width.space.latency.seq, args.repeats)
    dense_ppl = outcomes["width"].metrics[DENSE]["ppl"]
    for row in rows:
        row["measured"] = measured[f"{row['method']} {row['target']:g}"]
    summary = {"rows": rows, "dense_seconds": dense_seconds, "dense_ppl": dense_ppl, "search_seconds": seconds,
               "drops": drops}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"dense: {1e3 * dense_seconds:.1f} ms per forward, held-out ppl {dense_ppl:.3f}; search wall s: "
          f"width {seconds['width']:.0f}, depth {seconds['depth']:.0f}")
    print("| target | method | estimated speedup | measured speedup | measured / target | held-out ppl | "
          "held-out KL | params |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']:g}x | {r['method']} | {r['estimated']:.3f}x | {r['measured']:.3f}x | "
              f"{r['measured'] / r['target']:.3f} | {r['ppl']:.2f} | {r['kl']:.4f} | {int(r['params']):,} |")


if __name__ == "__main__":
    main()
