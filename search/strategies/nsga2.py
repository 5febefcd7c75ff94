"""NSGA-II over every budget at once, on Optuna's NSGAIISampler through ask/tell: a whole front in one job.

Optuna's study lives in memory and is rebuilt on resume by replaying the search: the sampler is seeded and the
controller answers replayed trials from our store, so the sampler sees the same values in the same order. One store,
one writer, one schema; Optuna's own tables would be a second record of the same trials to keep consistent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from paretopress.evaluators.samples import CALIBRATION
from paretopress.search.pareto import non_dominated
from paretopress.search.strategies.base import STRATEGIES, SearchSetting, Strategy, StrategySpec, Trial
from paretopress.search.strategies.evopress import stage_samples
from paretopress.spaces.genome import Genome
from paretopress.spaces.specs import SPACES

if TYPE_CHECKING:
    import optuna

    from paretopress.spaces.base import Space
    from paretopress.spaces.specs import SpaceSpec

COSTS = {"params": "params", "latency": "time"}  # second objective -> the space's cost entry that ranks the front
INFEASIBLE = (float("inf"), float("inf"))  # told for genomes over the budget, which are never evaluated


class NSGA2(Strategy):
    """Each generation asks ``population`` genomes; all are scored on the same calibration samples.

    Genomes over the budget (``violation(genome) > 0``) are not evaluated: Optuna is told they violate the constraint
    (``Trial.set_constraint``), and constrained domination ranks them below every feasible genome. The first
    generation is enqueued as random feasible genomes spread over the budgets, so the search starts feasible.
    ``quality`` (``kl`` or ``ppl``) is the first objective, ``cost`` the second.
    """

    def __init__(
        self,
        space: Space,
        *,
        generations: int,
        population: int,
        samples: tuple[int, ...],
        seed: int,
        violation: Callable[[Genome], float],
        initial: list[Genome],
        quality: str = "kl",
        cost: str = "params",
    ) -> None:
        import optuna  # imported here: the job schema loads this module, and Optuna takes a second to import
        from optuna.distributions import IntDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.generations = generations
        self.population = population
        self.samples = samples
        self.violation = violation
        self.fitness = quality
        self.evaluators = (quality, "params")
        self.cost = cost  # "params" (the evaluator's count) or "latency" (the space's estimate from its table)
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
        self.study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        self.distributions = {u: IntDistribution(0, n - 1) for u, n in zip(space.units, space.num_levels, strict=True)}
        for genome in initial:
            self.study.enqueue_trial(space.as_mapping(genome))
        self._generation = 0
        self._asked: list[tuple[optuna.Trial, Genome, float]] = []
        self._scored: dict[Genome, float] = {}

    def ask(self) -> list[Trial]:
        if self._generation == self.generations:
            return []
        self._asked = []
        for _ in range(self.population):
            trial = self.study.ask(self.distributions)
            genome = Genome(tuple(trial.params[u] for u in self.space.units))
            self._asked.append((trial, genome, self.violation(genome)))
        return [
            Trial(genome, CALIBRATION, self.samples, self.evaluators, "nsga2", generation=self._generation)
            for _, genome, violation in self._asked
            if violation <= 0
        ]

    def tell(self, values: list[dict[str, float]]) -> None:
        feasible = iter(values)
        for trial, genome, violation in self._asked:
            trial.set_constraint("budget", violation)
            if violation > 0:
                self.study.tell(trial, INFEASIBLE)
                continue
            value = next(feasible)
            self._scored[genome] = value[self.fitness]
            second = value["params"] if self.cost == "params" else self.space.cost(genome)[COSTS[self.cost]]
            self.study.tell(trial, [value[self.fitness], second])
        self._generation += 1

    @property
    def generation(self) -> int:
        return self._generation

    def front(self) -> list[tuple[Genome, float]]:
        genomes = list(self._scored)
        points = [(self._scored[g], self.space.cost(g)[COSTS[self.cost]]) for g in genomes]
        return [(genomes[i], self._scored[genomes[i]]) for i in non_dominated(points)]

    def final(self) -> dict[str, Genome]:
        ordered = sorted(self.front(), key=lambda point: self.space.cost(point[0])[COSTS[self.cost]])
        return {f"nsga2 {i + 1}": genome for i, (genome, _) in enumerate(ordered)}


@STRATEGIES.register("nsga2")
class NSGA2Spec(StrategySpec):
    """NSGA-II over every budget up to the space's, for a whole front in one job; one fixed sample set scores all.

    On width spaces every genome must reach the smallest speedup target, and ``objectives: [kl, latency]`` makes the
    estimated time (from the latency table) the second objective instead of the parameter count.
    """

    kind: Literal["nsga2"]
    generations: int = Field(10, ge=1)
    population: int = Field(16, ge=2, le=100_000)
    tokens: int = Field(1024, ge=1)
    objectives: tuple[Literal["kl", "ppl"], Literal["params", "latency"]] = ("kl", "params")

    def scoring_tokens(self) -> list[int]:
        return [self.tokens]

    def problem_with(self, space_spec: SpaceSpec) -> str | None:
        if problem := space_spec.whole_front_problem(self.kind):
            return problem
        objective, cost = self.objectives[1], COSTS[self.objectives[1]]
        if cost not in space_spec.costs:
            kinds = " or ".join(name for name, spec in SPACES.items() if cost in spec.costs)
            return f"strategy.objectives: {objective} needs a {kinds} space (its {cost} estimate)"
        return None

    def build(self, space: Space, space_spec: SpaceSpec, setting: SearchSetting,
              starts: list[list[Genome]] | None = None) -> Strategy:
        rng = np.random.default_rng(setting.seed)
        samples = rng.choice(setting.pool_size, stage_samples(self.tokens, setting.seq_len), replace=False)
        relaxation = space_spec.relaxation(space)
        initial = [relaxation.spaces[rng.choice(len(relaxation.spaces))].random_genome(rng)
                   for _ in range(self.population)]
        return NSGA2(space, generations=self.generations, population=self.population,
                     samples=tuple(sorted(int(i) for i in samples)), seed=setting.seed,
                     violation=relaxation.violation, initial=initial, quality=self.objectives[0],
                     cost=self.objectives[1])
