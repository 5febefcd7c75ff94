"""Running a study's baselines once: reuse the genomes the store holds, else compute, record genome and cost."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from paretopress.search.baselines.base import Calibration
from paretopress.search.baselines.specs import BaselineSpec
from paretopress.search.ledger import Ledger
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome

log = logging.getLogger(__name__)


def run_baselines(baselines: list[BaselineSpec], spaces: dict[str, Space], ledger: Ledger, study_id: int,
                  model: nn.Module, tokens: torch.Tensor, batch_size: int) -> dict[str, dict[str, Genome]]:
    """method -> label -> its genome at every budget (``spaces``: the space under each budget, by label suffix).

    A run whose settings the study already holds is read back, not recomputed: resuming is free and deterministic.
    ``tokens`` are the calibration samples; a baseline reads the first ``samples`` of them.
    """
    results = {}
    for spec in baselines:
        settings = spec.settings()
        labels = [f"{spec.method} {suffix}".strip() for suffix in spaces]
        genomes = ledger.baseline_genomes(study_id, settings)
        if sorted(genomes) != sorted(labels):
            log.info("baseline %s on %d calibration samples", spec.method, spec.samples)
            calibration = Calibration(model, tokens[:spec.samples], batch_size)
            start = time.perf_counter()
            proposed = spec.build().propose(list(spaces.values()), calibration)
            seconds = time.perf_counter() - start
            genomes = dict(zip(labels, proposed, strict=True))
            ledger.record_baseline(study_id, spec.method, settings, genomes, seconds, calibration.passes)
            log.info("baseline %s: %.1f s, %d calibration passes", spec.method, seconds, calibration.passes)
        results[spec.method] = {label: genomes[label] for label in labels}
    return results
