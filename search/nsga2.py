"""NSGA-II over every budget at once, on Optuna's NSGAIISampler through ask/tell: a whole front in one job.

Optuna's study lives in memory and is rebuilt on resume by replaying the search: the sampler is seeded and the
controller answers replayed trials from our store, so the sampler sees the same values in the same order. One store,
one writer, one schema; Optuna's own tables would be a second record of the same trials to keep consistent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import optuna
from optuna.distributions import IntDistribution

from paretopress.search.pareto import non_dominated
from paretopress.search.strategy import CALIBRATION, Strategy, Trial
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome

OBJECTIVES = ("kl", "params")  # the evaluators every trial runs
COSTS = {"params": "params", "latency": "time"}  # second objective -> the space's cost entry that ranks the front
INFEASIBLE = (float("inf"), float("inf"))  # told for genomes over the budget, which are never evaluated


class NSGA2(Strategy):
    """Each generation asks ``population`` genomes; all are scored on the same calibration samples.

    Genomes over the budget (``violation(genome) > 0``) are not evaluated: Optuna is told they violate the constraint
    (``Trial.set_constraint``), and constrained domination ranks them below every feasible genome. The first
    generation is enqueued as random feasible genomes spread over the budgets, so the search starts feasible.
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
        cost: str = "params",
    ) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.generations = generations
        self.population = population
        self.samples = samples
        self.violation = violation
        self.cost = cost  # "params" (the evaluator's count) or "latency" (the space's estimate from its table)
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
        self.study = optuna.create_study(directions=["minimize"] * len(OBJECTIVES), sampler=sampler)
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
            Trial(genome, CALIBRATION, self.samples, OBJECTIVES, "nsga2", generation=self._generation)
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
            self._scored[genome] = value["kl"]
            second = value["params"] if self.cost == "params" else self.space.cost(genome)[COSTS[self.cost]]
            self.study.tell(trial, [value["kl"], second])
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


def spread_over_budgets(at_budget: Callable[[float], Space], budgets: Sequence[float], count: int,
                        rng: np.random.Generator) -> list[Genome]:
    """``count`` random feasible genomes, their budgets drawn uniformly from ``budgets``."""
    return [at_budget(rng.choice(budgets).item()).random_genome(rng) for _ in range(count)]
