"""The controller: the only writer of the store. It asks the strategy, answers from the store where it can,
sends the rest to the executor, and records every result the moment it arrives."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from paretopress.job import JobSpec
from paretopress.search.evopress import EvoPress, Stage, stage_samples
from paretopress.search.executor import Executor
from paretopress.search.store import Store
from paretopress.search.strategy import HELDOUT, Strategy, Trial
from paretopress.spaces.base import Space
from paretopress.spaces.depth import DepthSpace
from paretopress.spaces.genome import Genome

REPORT_EVALUATORS = ("kl", "ppl", "params")


def build_space(job: JobSpec, model: nn.Module) -> Space:
    return DepthSpace(model, job.space.granularity, job.space.drop)


def build_strategy(job: JobSpec, space: Space) -> EvoPress:
    spec, seq_len = job.strategy, job.evaluation.seq_len
    return EvoPress(
        space,
        generations=spec.generations,
        offspring=spec.offspring,
        stages=[Stage(s.survivors, stage_samples(s.tokens, seq_len)) for s in spec.stages],
        pool_size=job.evaluation.calibration_samples,
        seed=job.seed,
    )


@dataclass
class Progress:
    """What a progress display needs after every batch."""

    generation: int
    generations: int
    best_fitness: float | None
    evaluated: int
    reused: int
    elapsed: float


class Controller:
    def __init__(self, store: Store, study_id: int, executor: Executor, seq_len: int) -> None:
        self.store = store
        self.study_id = study_id
        self.executor = executor
        self.seq_len = seq_len
        self.evaluated = 0
        self.reused = 0

    def resolve(self, trials: list[Trial]) -> list[dict[str, float]]:
        """Values for every trial: from the store if already evaluated on the same samples, else from workers."""
        values: list[dict[str, float] | None] = [
            self.store.lookup(self.study_id, t.genome, t.evaluators, t.pool, t.samples) for t in trials
        ]
        self.reused += sum(v is not None for v in values)
        missing = [i for i, v in enumerate(values) if v is None]
        unique: dict[tuple, int] = {}
        for i in missing:
            unique.setdefault((trials[i].genome, trials[i].pool, trials[i].samples, trials[i].evaluators), i)
        to_run = list(unique.values())
        for j, result in self.executor.run([trials[i] for i in to_run]):
            trial = trials[to_run[j]]
            self.store.record(
                self.study_id, trial.genome, trial.origin, trial.parent, trial.generation, trial.pool,
                trial.samples, len(trial.samples) * self.seq_len, result.values, result.seconds, result.worker,
            )
            self.evaluated += 1
            values[to_run[j]] = result.values
        for i in missing:
            t = trials[i]
            values[i] = values[unique[(t.genome, t.pool, t.samples, t.evaluators)]]
        return values  # type: ignore[return-value]

    def drive(self, strategy: Strategy, on_progress: Callable[[Progress], None], generations: int) -> None:
        start = time.perf_counter()
        while trials := strategy.ask():
            strategy.tell(self.resolve(trials))
            history = getattr(strategy, "history", [])
            on_progress(
                Progress(
                    len(history), generations, history[-1].fitness if history else None,
                    self.evaluated, self.reused, time.perf_counter() - start,
                )
            )

    def report(self, genomes: dict[str, Genome], heldout_samples: int) -> dict[str, dict[str, float]]:
        """Held-out KL, perplexity and parameter count of the named genomes (origin -> genome)."""
        samples = tuple(range(heldout_samples))
        trials = [Trial(g, HELDOUT, samples, REPORT_EVALUATORS, origin) for origin, g in genomes.items()]
        return dict(zip(genomes, self.resolve(trials), strict=True))
