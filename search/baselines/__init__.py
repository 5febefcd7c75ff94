"""One-shot baselines (uniform, OWL, ShortGPT, angular, FinerCut, SPDY): genomes without search, at exact budgets."""

from __future__ import annotations

from paretopress.job import BaselineSpec
from paretopress.search.baselines.base import Baseline, Calibration
from paretopress.search.baselines.depth import Angular, FinerCut, ShortGPT
from paretopress.search.baselines.linear import OWL, Uniform
from paretopress.search.baselines.spdy import SPDY


def make_baseline(spec: BaselineSpec) -> Baseline:
    """The baseline a job file names, with its settings."""
    if spec.method == "owl":
        return OWL(spec.m, spec.lam)
    return {"uniform": Uniform, "shortgpt": ShortGPT, "angular": Angular, "finercut": FinerCut, "spdy": SPDY}[
        spec.method]()


__all__ = ["Baseline", "Calibration", "make_baseline"]
