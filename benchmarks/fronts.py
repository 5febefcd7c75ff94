"""One front plot for two ways of getting a whole front on SmolLM2-135M: NSGA-II and an EvoPress budget sweep.

Runs (or resumes) both example jobs into one store, then compares their held-out fronts by hypervolume in
(KL, parameters as a fraction of the dense model's) against the jobs' reference point, and draws both fronts.

    .venv/bin/python benchmarks/fronts.py [--db runs/fronts.db] [--png benchmarks/fronts-smollm2.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from paretopress.api import open_store, plot_front
from paretopress.inputs.models import quiet_transformers
from paretopress.job import load_job
from paretopress.run import DENSE, run_job
from paretopress.search.pareto import hypervolume_2d

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
JOBS = ("smollm2-nsga2.yaml", "smollm2-sweep.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="runs/fronts.db")
    parser.add_argument("--png", default="benchmarks/fronts-smollm2.png")
    args = parser.parse_args()
    quiet_transformers()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    rows, names = [], []
    for file in JOBS:
        job = load_job(EXAMPLES / file)
        start = time.perf_counter()
        outcome = run_job(job, args.db)
        seconds = time.perf_counter() - start
        dense_params = outcome.metrics[DENSE]["params"]
        points = [(m["kl"], m["params"] / dense_params) for m in outcome.metrics.values()]
        volume = hypervolume_2d(points, (job.front.reference_kl, 1.0))
        rows.append((job.name, job.strategy.kind, len(outcome.metrics) - 1, outcome.evaluated, seconds, volume))
        names.append(job.name)
    with open_store(args.db) as store:
        plot_front({name: store.front(name) for name in names}, args.png)
    print("| study | strategy | held-out confirmed genomes | evaluations run | wall s | held-out hypervolume |")
    print("|---|---|---|---|---|---|")
    for name, kind, confirmed, evaluated, seconds, volume in rows:
        print(f"| {name} | {kind} | {confirmed} | {evaluated} | {seconds:.0f} | {volume:.4f} |")
    print(f"\nfront plot: {args.png}")


if __name__ == "__main__":
    main()
