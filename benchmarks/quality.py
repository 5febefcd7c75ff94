"""Held-out quality and wall time of every baseline next to EvoPress, at the same exact budgets, on SmolLM2-135M.

Runs (or resumes) one study per budget family in a store, each with its baselines, then prints one markdown row per
genome. Depth: 6 and 9 of 30 blocks (20% and 30%) with ShortGPT, angular, FinerCut, SPDY and an EvoPress sweep, and
EvoPress warm-started from SPDY's genomes at the same budgets; sparsity 0.5 / 0.6 / 0.7 (Wanda levels) with uniform,
OWL and EvoPress; 3 and 2.5 average bits (GPTQ levels) with uniform, SPDY and EvoPress. ``--sublayer`` adds FinerCut
on attention / MLP sub-layers (12 and 18 of 60), as in its paper; it costs about a thousand calibration passes. These
families run EvoPress as it was measured first: from one random start (``seeds: null``), 128-token samples.

``seeded``: depth 6 and 9 of 30 blocks at the demo's settings (256-token samples, stages of 1,024 and 8,192 tokens,
8 generations), EvoPress seeded with every depth baseline's genome (FinerCut's too) and 8 random genomes, offspring
pre-screened by the surrogate (4x drawn), confirmed on the Lee news articles at 512 tokens. ``seeded-sparsity``: the
same at 70% sparsity (Wanda levels), seeded with the sparsity baselines (uniform, OWL, SPDY); ``seeded-quant`` at 3
average bits (GPTQ levels, widths 2-6), seeded with uniform and SPDY; ``seeded-sublayer``: 12 of 60 attention / MLP
sub-layers, seeded with ShortGPT, SPDY and FinerCut on sub-layers (2 samples: 654 passes; angular drops whole blocks).
``legacy``: the first EvoPress (12 x 8 from one random start, 128-token samples) at depth 9 of 30 and 70% sparsity,
confirmed on the same news articles at 512 tokens as the seeded families, for quality at equal tokens. ``tokens``:
the seeded search at the ``legacy`` settings with as many generations as fit in a quarter of what the legacy search
spent finding its genome (its search's candidate tokens and the teacher's over the calibration pool: 131,072 tokens)
and in all of it, at depth 9 of 30 (quarter: ShortGPT and angular, 1 generation; all: with SPDY, 8) and 70% sparsity
(uniform, OWL, SPDY; 1 and 11 generations), no random seeds, no pre-screening; and SPDY alone on 4 samples at depth
9, the most of it a quarter pays for beside the teacher (no generation would fit).
``seeded-width``: the width space at 1.5x end to end (`examples/smollm2-speedup.yaml`'s grid and latency table,
structured-OBS levels), seeded with the uniform width genome, SPDY and 8 random genomes. ``seeded-long``: depth 9 of
30 with 32 generations instead of 8, the rest as ``seeded``. ``gemma3``: the real Gemma 3 270M (18 blocks, 262,144-token
vocabulary, BOS-prefixed samples) at the seeded settings with the sampled head (``tail_samples: 2048``): depth 4 of 18
blocks with every depth baseline, and 50% sparsity (Wanda levels) with uniform, OWL and SPDY; without pre-screening
(the product's default).

    .venv/bin/python benchmarks/quality.py --db runs/quality.db [--only FAMILY ...] [--sublayer]
        [--prescreen N]
"""

from __future__ import annotations

import argparse
import logging
import time

from paretopress.commands import ProgressLine
from paretopress.inputs.models import quiet_transformers
from paretopress.job import JobSpec
from paretopress.report.tokens import study_tokens
from paretopress.run import DENSE, Outcome, run_job
from paretopress.store.store import Store

EVOPRESS = {"kind": "evopress", "generations": 12, "offspring": 8, "seeds": None, "noise_draws": 0,
            "stages": [{"survivors": 2, "tokens": 512}, {"survivors": 1, "tokens": 2048}]}
DEPTH_BASELINES = ["shortgpt", "angular", "finercut", "spdy"]
SEEDED = {"strategy": {"kind": "evopress", "generations": 8, "offspring": 8, "prescreen": 4, "noise_draws": 2,
                       "stages": [{"survivors": 2, "tokens": 1024}, {"survivors": 1, "tokens": 8192}],
                       "seeds": {"baselines": DEPTH_BASELINES, "random": 8}},
          "evaluation": {"seq_len": 256, "calibration_samples": 96, "heldout_samples": 32, "top_k": 128,
                         "heldout_data": "lee-news", "heldout_seq_len": 512}}
COMMON = {"model": "smollm2-135m", "data": "wiki-sample", "seed": 0,
          "evaluation": {"seq_len": 128, "calibration_samples": 64, "heldout_samples": 32, "top_k": 128},
          "run": {"workers": 2, "threads_per_worker": 1, "batch_size": 8}}
LEVELS = {"calibration_samples": 32}
FAMILIES = ["depth", "warm", "sparsity", "quant", "seeded", "seeded-sparsity", "seeded-quant", "seeded-sublayer",
            "legacy", "tokens", "seeded-width", "seeded-long", "gemma3"]
WIDTH = {"kind": "width", "speedup": 1.5, "channels": [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0],
         "multiple": 8, "builder": "obs", "calibration_samples": 32,
         "latency": {"device": "cpu", "batch": 1, "seq": 128, "threads": 1, "repeats": 30}}
BUDGET_COST = {"quant": "bits", "width": "speedup"}  # the cost a row's exact budget reads, by space kind


def studies(sublayer: bool) -> dict[str, list[tuple[str, dict, bool]]]:
    """family -> (study name, job settings, whether EvoPress searches) for every study of the benchmark."""
    depth = [("quality-depth", {"space": {"kind": "depth", "granularity": "block", "drop": [6, 9]},
                                "baselines": [{"method": "shortgpt"}, {"method": "angular"},
                                              {"method": "finercut", "samples": 4}, {"method": "spdy"}]}, True)]
    warm = [("quality-depth-warm", {"space": {"kind": "depth", "granularity": "block", "drop": [6, 9]},
                                    "strategy": {**EVOPRESS, "warm_start": "spdy"}}, True)]
    if sublayer:
        depth.append(("quality-depth-sublayer", {
            "space": {"kind": "depth", "granularity": "sublayer", "drop": [12, 18]},
            "baselines": [{"method": "finercut", "samples": 4}]}, False))
    sparsity = [(f"quality-sparsity{round(s * 100)}", {
        "space": {"kind": "sparsity", "sparsity": s, "builder": "wanda", "levels": 8, **LEVELS},
        "baselines": [{"method": "uniform"}, {"method": "owl"}]}, True) for s in (0.5, 0.6, 0.7)]
    quant = [(f"quality-quant{b:g}", {
        "space": {"kind": "quant", "bits": b, "widths": [2, 3, 4, 5, 6], "group_size": 128, "builder": "gptq",
                  **LEVELS},
        "baselines": [{"method": "uniform"}, {"method": "spdy"}]}, True) for b in (3.0, 2.5)]
    seeded = [("quality-depth-seeded", {"space": {"kind": "depth", "granularity": "block", "drop": [6, 9]},
                                         "baselines": [{"method": "finercut", "samples": 4}], **SEEDED}, True)]
    sparsity70 = {"kind": "sparsity", "sparsity": 0.7, "builder": "wanda", "levels": 8, **LEVELS}
    seeded_sparsity = [("quality-sparsity70-seeded", {  # seeded with uniform, owl, spdy
        "space": sparsity70, **SEEDED, "strategy": {**SEEDED["strategy"], "seeds": {"random": 8}}}, True)]
    seeded_quant = [("quality-quant3-seeded", {
        "space": {"kind": "quant", "bits": 3.0, "widths": [2, 3, 4, 5, 6], "group_size": 128, "builder": "gptq",
                  **LEVELS},
        **SEEDED, "strategy": {**SEEDED["strategy"], "seeds": {"random": 8}}}, True)]  # uniform, spdy
    seeded_sublayer = [("quality-sublayer12-seeded", {
        "space": {"kind": "depth", "granularity": "sublayer", "drop": 12},
        "baselines": [{"method": "finercut", "samples": 2}],
        **SEEDED, "strategy": {**SEEDED["strategy"], "seeds": {"baselines": ["shortgpt", "spdy", "finercut"],
                                                               "random": 8}}}, True)]
    confirmed = {"evaluation": {**COMMON["evaluation"], "heldout_data": "lee-news", "heldout_seq_len": 512}}
    depth9 = {"kind": "depth", "granularity": "block", "drop": 9}
    legacy = [("quality-depth9-legacy", {"space": depth9, **confirmed}, True),
              ("quality-sparsity70-legacy", {"space": sparsity70, **confirmed}, True)]
    tokens = [(f"quality-{space}-tokens-{share}", {"space": settings, **confirmed, "strategy": {
        **EVOPRESS, "generations": generations, "seeds": {"baselines": seeds, "random": 0}}}, True)
              for space, settings, share, generations, seeds in (
                  ("depth9", depth9, "quarter", 1, ["shortgpt", "angular"]),
                  ("depth9", depth9, "all", 8, ["shortgpt", "angular", "spdy"]),
                  ("sparsity70", sparsity70, "quarter", 1, None),
                  ("sparsity70", sparsity70, "all", 11, None))]
    tokens.append(("quality-depth9-tokens-spdy4", {"space": depth9, **confirmed,  # SPDY on what a quarter leaves
                                                   "baselines": [{"method": "spdy", "samples": 4}]}, False))
    seeded_width = [("quality-width15-seeded", {
        "space": WIDTH, **SEEDED, "strategy": {**SEEDED["strategy"], "seeds": {"random": 8}}}, True)]  # spdy
    seeded_long = [("quality-depth9-seeded-long", {
        "space": depth9,
        "baselines": [{"method": "finercut", "samples": 4}],
        **SEEDED, "strategy": {**SEEDED["strategy"], "generations": 32}}, True)]
    on_gemma = {"model": "gemma3-270m", "evaluation": {**SEEDED["evaluation"], "tail_samples": 2048},
                "run": {**COMMON["run"], "batch_size": 2}}  # exact reports: 2 x 512 x 262,144 float32 logits a batch
    product = {**SEEDED["strategy"], "prescreen": 1}  # the product's default, not the SmolLM2 depth families' 4
    gemma3 = [
        ("quality-gemma3-depth4-seeded", {"space": {"kind": "depth", "granularity": "block", "drop": 4},
                                          "baselines": [{"method": "finercut", "samples": 4}],
                                          **on_gemma, "strategy": product}, True),
        ("quality-gemma3-sparsity50-seeded", {
            "space": {"kind": "sparsity", "sparsity": 0.5, "builder": "wanda", "levels": 8, **LEVELS},
            **on_gemma, "strategy": {**product, "seeds": {"random": 8}}}, True)]
    return {"depth": depth, "warm": warm, "sparsity": sparsity, "quant": quant, "seeded": seeded,
            "seeded-sparsity": seeded_sparsity, "seeded-quant": seeded_quant, "seeded-sublayer": seeded_sublayer,
            "legacy": legacy, "tokens": tokens, "seeded-width": seeded_width, "seeded-long": seeded_long,
            "gemma3": gemma3}


def budget(outcome: Outcome, label: str, kind: str) -> str:
    """What the row's budget is, exactly: blocks or sub-layers dropped, or the genome's own sparsity or bits."""
    if kind == "depth":
        return f"{sum(outcome.genomes[label].levels)} dropped"
    key = BUDGET_COST.get(kind, kind)
    return f"{key} {outcome.costs[label][key]:.6f}"


def rows(name: str, outcome: Outcome, kind: str, wall: float, store: Store) -> list[str]:
    runs = {run.label: run for run in store.baseline_runs(outcome.study_id)}
    search_seconds = wall - sum({run.method: run.seconds for run in runs.values()}.values())
    lines = []
    for label, values in outcome.metrics.items():
        if label == DENSE or label.startswith("initial"):
            continue
        run = runs.get(label)
        searched = "-" if outcome.resumed else f"{search_seconds:.0f}"  # a resumed study's wall is not its search's
        seconds = f"{run.seconds:.0f}" if run else searched
        passes = str(run.passes) if run else "-"
        other = outcome.confirmed.get(label)
        confirmed = "- | -" if other is None else f"{other['kl']:.4f} | {other['ppl']:.2f}"
        lines.append(f"| {name} | {label} | {budget(outcome, label, kind)} | {int(values['params']):,} | "
                     f"{values['kl']:.4f} | {values['ppl']:.2f} | {confirmed} | {seconds} | {passes} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--only", nargs="+", choices=FAMILIES, default=FAMILIES)
    parser.add_argument("--sublayer", action="store_true", help="also FinerCut on sub-layers (slow)")
    parser.add_argument("--prescreen", type=int, help="strategy.prescreen of the seeded families (default 4)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_transformers()
    table = []
    for family in args.only:
        for name, settings, search in studies(args.sublayer)[family]:
            strategy = settings.get("strategy", EVOPRESS)
            if args.prescreen is not None and family.startswith("seeded"):
                strategy = {**strategy, "prescreen": args.prescreen}
            job = JobSpec.model_validate({"name": name, **COMMON, **settings, "strategy": strategy})
            kind = job.space.kind
            start = time.perf_counter()
            progress = ProgressLine()  # a generation's line on stderr: long searches show they are alive
            outcome = run_job(job, args.db, search=search, on_progress=progress)
            progress.close()
            with Store(args.db, readonly=True) as store:
                table += rows(name, outcome, kind, time.perf_counter() - start, store)
                tokens = study_tokens(store, store.study(name))
            finding = tokens.search + tokens.baselines + job.evaluation.calibration_samples * job.evaluation.seq_len
            print(f"{name}: done in {time.perf_counter() - start:.0f} s; {tokens}; {finding:,} to find its genomes "
                  "(search, baselines, teacher on the calibration pool)", flush=True)
            for label, report in outcome.reports.items():
                print("\n".join(f"{name} {label}: {line}" for line in report.lines()), flush=True)
    print("| study | genome | exact budget | params | held-out KL | held-out ppl | other-domain KL | other-domain ppl "
          "| wall s | passes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
