"""The controller: the only writer of the store. It asks the strategy, answers from the store where it can,
sends the rest to the executor, and records every result the moment it arrives."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from paretopress.errors import UserError
from paretopress.job import (
    DepthSpaceSpec,
    JobSpec,
    JointSpaceSpec,
    NSGA2Spec,
    QuantSpaceSpec,
    SparsitySpaceSpec,
    WidthSpaceSpec,
)
from paretopress.search.evopress import EvoPress, Stage, stage_samples
from paretopress.search.executor import Executor
from paretopress.search.leveldb import attach_database
from paretopress.search.nsga2 import NSGA2, spread_over_budgets
from paretopress.search.pareto import hypervolume_2d
from paretopress.search.store import Store
from paretopress.search.strategy import HELDOUT, Strategy, Trial
from paretopress.search.sweep import Sweep
from paretopress.spaces.base import Space
from paretopress.spaces.depth import DepthSpace
from paretopress.spaces.genome import Genome
from paretopress.spaces.joint import JointSpace
from paretopress.spaces.linear import LinearSpace
from paretopress.spaces.quant import QuantSpace
from paretopress.spaces.sparsequant import SparseQuantSpace
from paretopress.spaces.sparsity import SparsitySpace
from paretopress.spaces.width import WidthSpace

REPORT_EVALUATORS = ("kl", "ppl", "params")
HYPERVOLUME_OBJECTIVES = ("kl", "params_fraction")


def build_space(job: JobSpec, model: nn.Module) -> Space:
    """The job's space; a depth space at its largest budget (every smaller one is valid too: ``at_budget``).

    Sparsity and quant spaces check their budget first (a one-line error before anything is built), then get their
    level database from the cache or build it here, in the controller, before any worker starts.
    """
    spec = job.space
    if isinstance(spec, DepthSpaceSpec):
        return DepthSpace(model, spec.granularity, max(spec.budgets))
    if isinstance(spec, JointSpaceSpec):
        linears = [linear_space(component, model) for component in spec.linears]
        if any(linear.limit is not None for linear in linears):
            raise UserError("space.quant.widths: in a joint space every budget is exact, so the bit-widths must be "
                            "evenly spaced and below 16 (e.g. 2,3,4,5,6)")
        for component, linear in zip(spec.linears, linears, strict=True):
            attach_database(linear, job, model, component.calibration_samples)
        linear = SparseQuantSpace(*linears) if len(linears) == 2 else linears[0]
        if spec.depth is None:
            return linear
        return JointSpace(DepthSpace(model, spec.depth.granularity, spec.depth.budgets[0]), linear)
    if isinstance(spec, WidthSpaceSpec):  # its time budget comes later, from the store's latency table
        width = WidthSpace(model, spec.heads, spec.channels, spec.builder, spec.multiple)
        attach_database(width, job, model, spec.calibration_samples)
        return width
    space = linear_space(spec, model)
    attach_database(space, job, model, spec.calibration_samples)
    return space


def linear_space(spec: SparsitySpaceSpec | QuantSpaceSpec, model: nn.Module) -> LinearSpace:
    """A sparsity or quant space without its level database: units, levels, exact costs and budget only."""
    if isinstance(spec, SparsitySpaceSpec):
        return SparsitySpace(model, spec.sparsity, spec.builder, spec.levels, spec.step, spec.tie)
    return QuantSpace(model, spec.bits, spec.widths, spec.builder, spec.group_size, spec.tie)


def build_strategy(job: JobSpec, space: Space, warm: list[Genome] | None = None) -> Strategy:
    """EvoPress at one budget, a sweep of EvoPress runs (one per budget, each seeded as if alone), or NSGA-II.

    EvoPress starts from ``warm`` (a baseline's genome per budget, in the job's budget order) when given; else on
    sparsity and quant spaces from the uniform genome, so the study also confirms the uniform configuration at the
    same exact budget ("initial"), and elsewhere from a random feasible genome.
    """
    spec, evaluation = job.strategy, job.evaluation
    if isinstance(space, LinearSpace | SparseQuantSpace):
        return _evopress(job, space, initial=warm[0] if warm else space.uniform())
    if isinstance(space, JointSpace):
        return _evopress(job, space, initial=warm[0] if warm else None)
    if isinstance(space, WidthSpace) and not isinstance(spec, NSGA2Spec):  # per target: warm start, else uniform
        timed = space.at_speedups(job.space.speedups)
        starts = warm or [at.uniform() for at in timed.values()]
        runs = {label: _evopress(job, at, initial=start) for (label, at), start in zip(timed.items(), starts,
                                                                                      strict=True)}
        return runs[""] if "" in runs else Sweep(runs)
    if isinstance(spec, NSGA2Spec):
        rng = np.random.default_rng(job.seed)
        samples = rng.choice(evaluation.calibration_samples, stage_samples(spec.tokens, evaluation.seq_len),
                             replace=False)
        violation, initial = _nsga2_budget(job, space, spec.population, rng)
        return NSGA2(
            space, generations=spec.generations, population=spec.population,
            samples=tuple(sorted(int(i) for i in samples)), seed=job.seed, violation=violation, initial=initial,
            cost=spec.objectives[1],
        )
    starts = warm or [None] * len(job.space.budgets)
    runs = {drop: _evopress(job, space.at_budget(drop), start)
            for drop, start in zip(job.space.budgets, starts, strict=True)}
    return next(iter(runs.values())) if len(runs) == 1 else Sweep({f"drop={d}": run for d, run in runs.items()})


def _nsga2_budget(job: JobSpec, space: Space, population: int, rng: np.random.Generator
                  ) -> tuple[Callable[[Genome], float], list[Genome]]:
    """NSGA-II's constraint (over the budget when positive) and first generation: every depth budget up to the
    space's; on width spaces any genome at least as fast as the smallest speedup target."""
    if isinstance(space, WidthSpace):
        limit = space.at_speedup(min(job.space.speedups)).limit
        return (lambda genome: limit.total(genome.levels) - limit.bound,
                spread_over_budgets(space.at_speedup, job.space.speedups, population, rng))
    return (lambda genome: space.cost(genome)["dropped"] - space.drop,
            spread_over_budgets(space.at_budget, range(1, space.drop + 1), population, rng))


def _evopress(job: JobSpec, space: Space, initial: Genome | None = None) -> EvoPress:
    spec, seq_len = job.strategy, job.evaluation.seq_len
    return EvoPress(
        space,
        generations=spec.generations,
        offspring=spec.offspring,
        stages=[Stage(s.survivors, stage_samples(s.tokens, seq_len)) for s in spec.stages],
        pool_size=job.evaluation.calibration_samples,
        seed=job.seed,
        initial=initial,
    )


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


class Controller:
    def __init__(self, store: Store, study_id: int, executor: Executor, seq_len: int, space: Space,
                 reference_kl: float) -> None:
        self.store = store
        self.study_id = study_id
        self.executor = executor
        self.seq_len = seq_len
        self.space = space
        self.reference_kl = reference_kl
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
        start, recorded, hypervolume = time.perf_counter(), 0, None
        while trials := strategy.ask():
            strategy.tell(self.resolve(trials))
            front = strategy.front()
            if strategy.generation > recorded:
                recorded, hypervolume = strategy.generation, self.hypervolume(front)
                self.store.record_hypervolume(self.study_id, recorded, hypervolume, list(HYPERVOLUME_OBJECTIVES),
                                              [self.reference_kl, 1.0])
            on_progress(
                Progress(
                    strategy.generation, generations, min((kl for _, kl in front), default=None), hypervolume,
                    self.evaluated, self.reused, time.perf_counter() - start,
                )
            )

    def hypervolume(self, front: list[tuple[Genome, float]]) -> float:
        """Area dominated in (KL, parameters as a fraction of the dense model's) up to (reference_kl, 1)."""
        dense_params = self.space.cost(self.space.dense())["params"]
        points = [(kl, self.space.cost(genome)["params"] / dense_params) for genome, kl in front]
        return hypervolume_2d(points, (self.reference_kl, 1.0))

    def report(self, genomes: dict[str, Genome], heldout_samples: int) -> dict[str, dict[str, float]]:
        """Held-out KL, perplexity and parameter count of the named genomes (origin -> genome)."""
        samples = tuple(range(heldout_samples))
        trials = [Trial(g, HELDOUT, samples, REPORT_EVALUATORS, origin) for origin, g in genomes.items()]
        return dict(zip(genomes, self.resolve(trials), strict=True))
