"""Running a job's baselines once per study: reuse the genomes the store holds, else compute, record genome and cost."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from paretopress.job import DepthSpaceSpec, JobSpec, WidthSpaceSpec
from paretopress.search.baselines import Calibration, make_baseline
from paretopress.search.store import Store
from paretopress.spaces.base import Space
from paretopress.spaces.depth import DepthSpace
from paretopress.spaces.genome import Genome
from paretopress.spaces.width import WidthSpace

log = logging.getLogger(__name__)


def budget_spaces(job: JobSpec, space: Space) -> dict[str, Space]:
    """The study's space under each of its budgets, by label suffix: ``drop=N`` in a depth sweep, else none."""
    if isinstance(space, DepthSpace) and isinstance(job.space, DepthSpaceSpec) and len(job.space.budgets) > 1:
        return {f"drop={d}": space.at_budget(d) for d in job.space.budgets}
    if isinstance(space, WidthSpace) and isinstance(job.space, WidthSpaceSpec):
        return space.at_speedups(job.space.speedups)
    return {"": space}


def run_baselines(job: JobSpec, store: Store, study_id: int, space: Space, model: nn.Module,
                  tokens: torch.Tensor) -> dict[str, dict[str, Genome]]:
    """method -> label -> its genome at every budget (in ``budget_spaces`` order), for every baseline the job names.

    A run whose settings the study already holds is read back, not recomputed: resuming is free and deterministic.
    ``tokens`` are the calibration samples; a baseline reads the first ``samples`` of them.
    """
    spaces = budget_spaces(job, space)
    results = {}
    for spec in job.all_baselines:
        settings = spec.settings()
        labels = [f"{spec.method} {suffix}".strip() for suffix in spaces]
        genomes = store.baseline_genomes(study_id, settings)
        if sorted(genomes) != sorted(labels):
            log.info("baseline %s on %d calibration samples", spec.method, spec.samples)
            calibration = Calibration(model, tokens[:spec.samples], job.run.batch_size)
            start = time.perf_counter()
            proposed = make_baseline(spec).propose(list(spaces.values()), calibration)
            seconds = time.perf_counter() - start
            genomes = dict(zip(labels, proposed, strict=True))
            store.record_baseline(study_id, spec.method, settings, genomes, seconds, calibration.passes)
            log.info("baseline %s: %.1f s, %d calibration passes", spec.method, seconds, calibration.passes)
        results[spec.method] = {label: genomes[label] for label in labels}
    return results
