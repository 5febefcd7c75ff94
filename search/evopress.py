"""EvoPress: (1 + lambda) evolution with level-switch mutation and multi-step selection.

Each generation mutates the parent into ``offspring`` distinct children, then runs the selection stages: every stage
draws a fresh random minibatch of calibration samples (more tokens at each stage) and keeps the lowest-KL survivors.
The parent joins the last stage (elitism), so it is re-scored on the same samples as its best children.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from paretopress.search.operators import distinct_offspring
from paretopress.search.strategy import CALIBRATION, Strategy, Trial
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome

FITNESS = "kl"


@dataclass(frozen=True)
class Stage:
    survivors: int
    samples: int


@dataclass(frozen=True)
class GenerationRecord:
    generation: int
    parent: Genome
    fitness: float


class EvoPress(Strategy):
    def __init__(
        self,
        space: Space,
        *,
        generations: int,
        offspring: int,
        stages: list[Stage],
        pool_size: int,
        seed: int,
        initial: Genome | None = None,
    ) -> None:
        self.space = space
        self.generations = generations
        self.offspring = offspring
        self.stages = stages
        self.pool_size = pool_size
        self.rng = np.random.default_rng(seed)
        self.history: list[GenerationRecord] = []
        self._parent = initial if initial is not None else space.random_genome(self.rng)
        self._initial = self._parent
        self._search = self._run()
        self._pending = next(self._search)

    def ask(self) -> list[Trial]:
        return self._pending

    def tell(self, values: list[dict[str, float]]) -> None:
        try:
            self._pending = self._search.send([v[FITNESS] for v in values])
        except StopIteration:
            self._pending = []

    @property
    def generation(self) -> int:
        return len(self.history)

    def front(self) -> list[tuple[Genome, float]]:
        return [(self._parent, self.history[-1].fitness)] if self.history else []

    def final(self) -> dict[str, Genome]:
        return {"initial": self._initial, "evopress": self._parent}

    def _origin(self, genome: Genome) -> str:
        return "initial" if genome == self._initial else "evopress"

    def _draw(self, samples: int) -> tuple[int, ...]:
        return tuple(sorted(int(i) for i in self.rng.choice(self.pool_size, size=samples, replace=False)))

    def _run(self) -> Generator[list[Trial], list[float], None]:
        for generation in range(self.generations):
            parent = self._parent
            candidates = distinct_offspring(parent, self.space, self.offspring, self.rng)
            fitness: list[float] = []
            for index, stage in enumerate(self.stages):
                if index == len(self.stages) - 1:
                    candidates = [*candidates, parent]
                samples = self._draw(stage.samples)
                trials = [
                    Trial(c, CALIBRATION, samples, (FITNESS,), self._origin(c), parent, generation) for c in candidates
                ]
                stage_fitness = yield trials
                order = sorted(range(len(candidates)), key=lambda i: stage_fitness[i])[: stage.survivors]
                candidates = [candidates[i] for i in order]
                fitness = [stage_fitness[i] for i in order]
            self._parent = candidates[0]
            self.history.append(GenerationRecord(generation, candidates[0], fitness[0]))


def stage_samples(tokens: int, seq_len: int) -> int:
    """Samples needed to cover ``tokens`` at ``seq_len`` tokens per sample."""
    return max(1, math.ceil(tokens / seq_len))
