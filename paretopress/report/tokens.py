"""Tokens a study forwarded: the currency in which quality at equal cost compares across methods and studies
(seconds depend on the machine and its load; tokens do not)."""

from __future__ import annotations

from dataclasses import dataclass

from paretopress.evaluators.samples import CALIBRATION
from paretopress.store.store import Store
from paretopress.store.tables import BaselineRun, Study


@dataclass(frozen=True)
class Tokens:
    candidates: int  # every candidate evaluation: the search, its screening and the held-out reports
    baselines: int  # the one-shot baselines' passes over their calibration samples
    teacher: int  # the dense model's outputs over the calibration and held-out pools
    search: int  # of the candidates', those on calibration samples: what the search itself spent

    @property
    def total(self) -> int:
        return self.candidates + self.baselines + self.teacher

    def __str__(self) -> str:
        return (f"{self.total:,} tokens forwarded ({self.candidates:,} by candidates, {self.baselines:,} by "
                f"baselines, {self.teacher:,} by the teacher)")


def baseline_tokens(run: BaselineRun, seq_len: int) -> int:
    """One baseline run's passes over its samples (a run covers every budget of the study at once)."""
    return run.passes * run.settings.get("samples", 0) * seq_len


def study_tokens(store: Store, study: Study) -> Tokens:
    evaluation = study.spec["evaluation"]
    runs = {run.settings_hash: run for run in store.baseline_runs(study.id)}  # one per run, not per budget
    evaluations = store.evaluations(study.id)
    return Tokens(
        candidates=sum(e.tokens for e in evaluations),
        baselines=sum(baseline_tokens(run, evaluation["seq_len"]) for run in runs.values()),
        teacher=(evaluation["calibration_samples"] + evaluation["heldout_samples"]) * evaluation["seq_len"],
        search=sum(e.tokens for e in evaluations if e.pool == CALIBRATION),
    )
