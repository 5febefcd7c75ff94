"""``kind: random``: uniformly drawn feasible genomes at the study's budget, the sanity baseline every search beats.

Each generation draws ``per_generation`` genomes and scores them all on one fixed calibration sample set of
``tokens`` tokens, so every draw is compared on the same samples; the best of all is confirmed on held-out data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from paretopress.evaluators.samples import CALIBRATION
from paretopress.search.strategies.base import STRATEGIES, SearchSetting, Strategy, StrategySpec, Trial
from paretopress.search.strategies.evopress import stage_samples
from paretopress.search.strategies.sweep import one_or_sweep

if TYPE_CHECKING:
    from paretopress.spaces.base import Space
    from paretopress.spaces.genome import Genome
    from paretopress.spaces.specs import SpaceSpec


class RandomSearch(Strategy):
    def __init__(self, space: Space, *, generations: int, per_generation: int, samples: tuple[int, ...],
                 seed: int) -> None:
        self.space = space
        self.generations = generations
        self.per_generation = per_generation
        self.samples = samples
        self.rng = np.random.default_rng(seed)
        self._generation = 0
        self._asked: list[Genome] = []
        self._best: tuple[Genome, float] | None = None

    def ask(self) -> list[Trial]:
        if self._generation == self.generations:
            return []
        self._asked = [self.space.random_genome(self.rng) for _ in range(self.per_generation)]
        return [Trial(genome, CALIBRATION, self.samples, (self.fitness,), "random", generation=self._generation)
                for genome in self._asked]

    def tell(self, values: list[dict[str, float]]) -> None:
        for genome, value in zip(self._asked, values, strict=True):
            if self._best is None or value[self.fitness] < self._best[1]:
                self._best = (genome, value[self.fitness])
        self._generation += 1

    @property
    def generation(self) -> int:
        return self._generation

    def front(self) -> list[tuple[Genome, float]]:
        return [self._best] if self._best else []

    def final(self) -> dict[str, Genome]:
        return {"random": self._best[0]} if self._best else {}


@STRATEGIES.register("random")
class RandomSpec(StrategySpec):
    kind: Literal["random"]
    generations: int = Field(8, ge=1)
    per_generation: int = Field(8, ge=1, le=100_000)
    tokens: int = Field(1024, ge=1)

    def scoring_tokens(self) -> list[int]:
        return [self.tokens]

    def build(self, space: Space, space_spec: SpaceSpec, setting: SearchSetting,
              starts: list[list[Genome]] | None = None) -> Strategy:
        rng = np.random.default_rng(setting.seed)
        drawn = rng.choice(setting.pool_size, stage_samples(self.tokens, setting.seq_len), replace=False)
        samples = tuple(sorted(int(i) for i in drawn))
        return one_or_sweep({label: RandomSearch(at, generations=self.generations, per_generation=self.per_generation,
                                                 samples=samples, seed=setting.seed)
                             for label, at in space_spec.budget_spaces(space).items()})
