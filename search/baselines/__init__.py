"""One-shot baselines (uniform, OWL, ShortGPT, angular, FinerCut, SPDY): genomes without search, at exact budgets."""

from __future__ import annotations

from paretopress.job import BaselineSpec
from paretopress.search.baselines.base import Baseline, Calibration
from paretopress.search.baselines.depth import Angular, FinerCut, ShortGPT
from paretopress.search.baselines.linear import OWL, Uniform
from paretopress.search.baselines.spdy import SPDY

WITHOUT_SETTINGS: dict[str, type[Baseline]] = {b.method: b for b in (Uniform, ShortGPT, Angular, FinerCut, SPDY)}


def make_baseline(spec: BaselineSpec) -> Baseline:
    """The baseline a job file names, with its settings."""
    return OWL(spec.m, spec.lam) if spec.method == "owl" else WITHOUT_SETTINGS[spec.method]()


__all__ = ["Baseline", "Calibration", "make_baseline"]
