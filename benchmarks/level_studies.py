"""Held-out KL and perplexity of EvoPress' genome next to the uniform genome at the same exact budget, per study.

Reads finished sparsity / quant studies from a store (read-only), rebuilds each study's space from its stored spec
(no level database needed) for the exact budget of both genomes, and prints one markdown row per study, plus how
the found genome spreads its levels over the kinds of linear layer.

    .venv/bin/python benchmarks/level_studies.py --db runs/levels.db smollm2-sparsity50 smollm2-sparsity70
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from paretopress.evaluators.samples import HELDOUT
from paretopress.inputs.models import load_model, quiet_transformers
from paretopress.job import JobSpec
from paretopress.spaces.genome import Genome
from paretopress.spaces.linear import LinearSpace
from paretopress.spaces.quant import QuantSpace
from paretopress.spaces.sparsity import SparsitySpace
from paretopress.store.store import Store


def per_kind(space: LinearSpace, genome: Genome) -> str:
    """Mean (min-max) sparsity or bits of the genome per linear kind (q_proj, ..., down_proj)."""
    values = defaultdict(list)
    for i, level in enumerate(genome.levels):
        kind = space.units[i].rpartition(".")[2]
        values[kind].append(space.widths[level] if isinstance(space, QuantSpace)
                            else space.removed[i][level] / space.numels[i])
    return ", ".join(f"{kind} {sum(v) / len(v):.2f} ({min(v):.2f}-{max(v):.2f})" for kind, v in values.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("studies", nargs="+")
    args = parser.parse_args()
    quiet_transformers()
    rows, spreads = [], []
    with Store(args.db, readonly=True) as store:
        for name in args.studies:
            study = store.study(name)
            job = JobSpec.from_stored(study.name, study.spec)
            space = job.space.space(load_model(job.model))
            metrics = defaultdict(dict)
            for e in store.evaluations(study.id, HELDOUT):
                metrics[e.candidate_id][e.evaluator] = e.value
            found = {}
            for c in store.candidates(study.id):
                if c.origin in ("initial", "evopress") and c.id in metrics:
                    found[c.origin] = (Genome.from_json(c.genome), metrics[c.id])
            budget = "sparsity" if isinstance(space, SparsitySpace) else "bits"
            (uniform, u), (evo, e) = found["initial"], found["evopress"]
            assert space.cost(uniform)[budget] == space.cost(evo)[budget]
            rows.append(f"| {name} | {space.builder} | {budget} {space.cost(evo)[budget]:.6f} | {u['kl']:.4f} | "
                        f"{u['ppl']:.2f} | {e['kl']:.4f} | {e['ppl']:.2f} | {e['ppl'] / u['ppl']:.3f} |")
            spreads.append(f"- {name}, EvoPress genome, {budget} per layer kind, mean (min-max): "
                           f"{per_kind(space, evo)}")
    print("| study | levels | exact budget (both genomes) | uniform KL | uniform ppl | EvoPress KL | EvoPress ppl "
          "| ppl ratio |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("\n".join(spreads))


if __name__ == "__main__":
    main()
