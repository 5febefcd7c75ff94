"""The controller: the only writer of the store. It asks the strategy, answers from the store where it can,
sends the rest to the executor, and records every result the moment it arrives."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from paretopress.evaluators.samples import HELDOUT
from paretopress.search.executor import Executor
from paretopress.search.ledger import Ledger
from paretopress.search.pareto import hypervolume_2d
from paretopress.search.strategies.base import Strategy, Trial
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome

REPORT_EVALUATORS = ("kl", "ppl", "params")
SPACE_EVALUATORS = ("bytes",)  # answered from the space's exact costs here, not measured by a worker


@dataclass
class Progress:
    """What a progress display needs after every batch."""

    generation: int
    generations: int
    best_fitness: float | None
    hypervolume: float | None
    evaluated: int
    reused: int
    elapsed: float
    fitness: str = "kl"  # what ``best_fitness`` measures


class Controller:
    def __init__(self, store: Ledger, study_id: int, executor: Executor, seq_lens: dict[str, int], space: Space,
                 reference_kl: float, cost: str = "params") -> None:
        self.store = store
        self.study_id = study_id
        self.executor = executor
        self.seq_lens = seq_lens  # tokens per sample of each pool (a confirmation pool may be longer)
        self.space = space
        self.reference_kl = reference_kl
        self.cost = cost  # the front's cost axis: an entry of ``Space.cost``
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
        for j, result in self.executor.run([_for_worker(trials[i]) for i in to_run]):
            trial = trials[to_run[j]]
            measured = {**result.values, **self._space_values(trial)}
            self.store.record(
                self.study_id, trial.genome, trial.origin, trial.parent, trial.generation, trial.pool,
                trial.samples, len(trial.samples) * self.seq_lens[trial.pool], measured, result.seconds,
                result.worker,
            )
            self.evaluated += 1
            values[to_run[j]] = measured
        for i in missing:
            t = trials[i]
            values[i] = values[unique[(t.genome, t.pool, t.samples, t.evaluators)]]
        return values  # type: ignore[return-value]

    def drive(self, strategy: Strategy, on_progress: Callable[[Progress], None], generations: int) -> None:
        start, recorded, hypervolume = time.perf_counter(), 0, None
        while trials := strategy.ask():
            strategy.tell(self.resolve(trials))
            front = strategy.front()
            if strategy.generation > recorded:
                recorded, hypervolume = strategy.generation, self.hypervolume(front)
                self.store.record_hypervolume(self.study_id, recorded, hypervolume,
                                              [strategy.fitness, f"{self.cost}_fraction"], [self.reference_kl, 1.0])
            on_progress(
                Progress(
                    strategy.generation, generations, min((value for _, value in front), default=None), hypervolume,
                    self.evaluated, self.reused, time.perf_counter() - start, strategy.fitness,
                )
            )

    def _space_values(self, trial: Trial) -> dict[str, float]:
        wanted = [name for name in trial.evaluators if name in SPACE_EVALUATORS]
        cost = self.space.cost(trial.genome) if wanted else {}
        return {name: cost[name] for name in wanted}

    def hypervolume(self, front: list[tuple[Genome, float]]) -> float:
        """Area dominated in (fitness, cost as a fraction of the dense genome's) up to (reference_kl, 1)."""
        dense = self.space.cost(self.space.dense())[self.cost]
        points = [(kl, self.space.cost(genome)[self.cost] / dense) for genome, kl in front]
        return hypervolume_2d(points, (self.reference_kl, 1.0))

    def report(self, genomes: dict[str, Genome], heldout_samples: int, pool: str = HELDOUT
               ) -> dict[str, dict[str, float]]:
        """Held-out KL, perplexity, parameter count and the front's cost of the named genomes (origin -> genome), on
        the first ``heldout_samples`` of ``pool``."""
        samples = tuple(range(heldout_samples))
        evaluators = tuple(dict.fromkeys((*REPORT_EVALUATORS, self.cost)))
        trials = [Trial(g, pool, samples, evaluators, origin) for origin, g in genomes.items()]
        return dict(zip(genomes, self.resolve(trials), strict=True))


def _for_worker(trial: Trial) -> Trial:
    """The trial without the evaluators the controller answers from the space."""
    return dataclasses.replace(trial, evaluators=tuple(e for e in trial.evaluators if e not in SPACE_EVALUATORS))
