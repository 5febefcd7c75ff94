"""EvoPress: (1 + lambda) evolution with level-switch mutation and multi-step selection.

Each generation mutates the parent into ``offspring`` distinct children, then runs the selection stages: every stage
draws a fresh random minibatch of calibration samples (more tokens at each stage) and keeps the lowest-KL survivors.
The parent joins the last stage (elitism), so it is re-scored on the same samples as its best children.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from paretopress.evaluators.samples import CALIBRATION
from paretopress.kernel.spec import Closed
from paretopress.search.baselines.specs import BASELINES, BaselineSpec
from paretopress.search.operators import distinct_offspring
from paretopress.search.strategies.base import STRATEGIES, SearchSetting, Strategy, StrategySpec, Trial
from paretopress.search.strategies.sweep import one_or_sweep

if TYPE_CHECKING:
    from paretopress.spaces.base import Space
    from paretopress.spaces.genome import Genome
    from paretopress.spaces.specs import SpaceSpec

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


class StageSpec(Closed):
    """One selection stage: score the remaining candidates on ``tokens`` fresh tokens, keep ``survivors``."""

    survivors: int = Field(ge=1)
    tokens: int = Field(ge=1)


def _default_stages() -> list[StageSpec]:
    return [StageSpec(survivors=2, tokens=1024), StageSpec(survivors=1, tokens=4096)]


BaselineChoice = BASELINES.union()


@STRATEGIES.register("evopress")
class EvoPressSpec(StrategySpec):
    """EvoPress at each budget of the space (a sweep when there are several), from ``warm_start``'s genomes (a
    baseline's method, or its settings) or else from the space's own start (uniform, or random)."""

    kind: Literal["evopress"] = "evopress"
    generations: int = Field(20, ge=1)
    offspring: int = Field(8, ge=1, le=100_000)
    stages: list[StageSpec] = Field(default_factory=_default_stages, min_length=1)
    warm_start: BaselineChoice | str | None = None

    @model_validator(mode="after")
    def _stages_narrow_to_one(self) -> EvoPressSpec:
        survivors = [s.survivors for s in self.stages]
        if survivors[0] > self.offspring:
            raise ValueError(f"first stage keeps {survivors[0]} survivors but only {self.offspring} offspring exist")
        if any(b > a for a, b in itertools.pairwise(survivors)):
            raise ValueError(f"stage survivors must not grow from stage to stage: {survivors}")
        if survivors[-1] != 1:
            raise ValueError(f"the last stage must keep exactly 1 survivor (the next parent), not {survivors[-1]}")
        return self

    @field_validator("warm_start")
    @classmethod
    def _known_baseline(cls, warm_start: BaselineSpec | str | None) -> BaselineSpec | str | None:
        if isinstance(warm_start, str) and warm_start not in BASELINES:
            raise ValueError(f"unknown baseline {warm_start!r}; expected one of {', '.join(BASELINES.names)}")
        return warm_start

    def scoring_tokens(self) -> list[int]:
        return [s.tokens for s in self.stages]

    def start_baseline(self) -> str | BaselineSpec | None:
        return self.warm_start

    def build(self, space: Space, space_spec: SpaceSpec, setting: SearchSetting,
              warm: list[Genome] | None = None) -> Strategy:
        budgets = space_spec.budget_spaces(space)
        starts = warm or [at.start() for at in budgets.values()]
        return one_or_sweep({label: self._evopress(at, setting, start)
                             for (label, at), start in zip(budgets.items(), starts, strict=True)})

    def _evopress(self, space: Space, setting: SearchSetting, initial: Genome | None) -> EvoPress:
        stages = [Stage(s.survivors, stage_samples(s.tokens, setting.seq_len)) for s in self.stages]
        return EvoPress(space, generations=self.generations, offspring=self.offspring, stages=stages,
                        pool_size=setting.pool_size, seed=setting.seed, initial=initial)
