"""EvoPress: (1 + lambda) evolution with level-switch mutation and multi-step selection.

Each generation mutates the parent into ``offspring`` distinct children, then runs the selection stages: every stage
draws a fresh random minibatch of calibration samples (more tokens at each stage) and keeps the lowest-KL survivors.
The parent joins the last stage (elitism), so it is re-scored on the same samples as its best children.

The first parent is screened from seeds: the space's own start, every cheap baseline's genome at the budget and a
few random genomes. A search that starts from one random genome loses, in the generations a user can afford, to the
one-shot heuristics it should improve on; started from the best of them it can only move away at its own fitness.
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
from paretopress.search.strategies.base import (
    STRATEGIES,
    Noise,
    SearchReport,
    SearchSetting,
    Strategy,
    StrategySpec,
    Trial,
)
from paretopress.search.strategies.sweep import one_or_sweep
from paretopress.search.surrogate import AdditiveSurrogate, rank_correlation

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
        starts: list[Genome] | None = None,
        random_starts: int = 0,
        noise_draws: int = 0,
        prescreen: int = 1,
    ) -> None:
        """``starts`` are genomes the search may start from; with ``random_starts`` random genomes beside them, the
        first parent is the best at the last selection stage (``screen``). One start and no random ones: that start;
        neither: one random genome. ``noise_draws`` fresh minibatches of the last stage's size measure, once done,
        the fitness noise and the gain over the start. With ``prescreen`` > 1 each generation draws that many times
        ``offspring`` mutants and evaluates the ``offspring`` an additive surrogate of the fitness ranks best, once
        it has seen any values."""
        self.space = space
        self.generations = generations
        self.offspring = offspring
        self.stages = stages
        self.pool_size = pool_size
        self.rng = np.random.default_rng(seed)
        self.history: list[GenerationRecord] = []
        self.noise_draws = noise_draws
        self.prescreen = prescreen
        self.surrogate = AdditiveSurrogate(space.num_levels)
        self._noise: Noise | None = None
        self._correlations: list[float] = []
        self._starts = list(dict.fromkeys(starts or []))
        self._screened = random_starts > 0 or len(self._starts) > 1
        randoms = random_starts if self._screened else 1 - len(self._starts)
        self._randoms = [space.random_genome(self.rng) for _ in range(randoms)]
        self._parent = self._initial = (self._starts + self._randoms)[0]
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

    def report(self) -> dict[str, SearchReport]:
        return {"": SearchReport(self._noise, tuple(self._correlations))}

    def _origin(self, genome: Genome) -> str:
        return "initial" if genome == self._initial else "evopress"

    def _draw(self, samples: int) -> tuple[int, ...]:
        return tuple(sorted(int(i) for i in self.rng.choice(self.pool_size, size=samples, replace=False)))

    def _run(self) -> Generator[list[Trial], list[float], None]:
        if self._screened:
            self._parent = self._initial = yield from self._screen()
        for generation in range(self.generations):
            parent = self._parent
            candidates, predicted = self._offspring(parent)
            fitness: list[float] = []
            for index, stage in enumerate(self.stages):
                if index == len(self.stages) - 1:
                    candidates = [*candidates, parent]
                candidates, fitness = yield from self._select(candidates, stage, parent, generation,
                                                              predicted if index == 0 else None)
            self._parent = candidates[0]
            self.history.append(GenerationRecord(generation, candidates[0], fitness[0]))
        if self.noise_draws:
            self._noise = yield from self._measure_noise()

    def _measure_noise(self) -> Generator[list[Trial], list[float], Noise]:
        """The final genome and the start on the same fresh minibatches, one batch of trials for all draws."""
        final, start, size = self._parent, self._initial, self.stages[-1].samples
        draws = [self._draw(size) for _ in range(self.noise_draws)]
        fitness = yield [Trial(genome, CALIBRATION, samples, (FITNESS,), self._origin(genome))
                         for samples in draws for genome in (final, start)]
        ends, gains = np.array(fitness[0::2]), np.array(fitness[1::2]) - np.array(fitness[0::2])
        spread = 1 if self.noise_draws > 1 else 0
        return Noise(size, self.noise_draws, float(ends.mean()), float(ends.std(ddof=spread)),
                     float(gains.mean()), float(gains.std(ddof=spread)))

    def _screen(self) -> Generator[list[Trial], list[float], Genome]:
        """The first parent: the random genomes through every stage but the last, then their survivors beside the
        given starts at the last stage, where the best of all wins. So the search starts no worse, at its own
        fitness, than the best start; the random ones pay for the cheap stages only."""
        candidates = self._randoms
        for stage in self.stages[:-1]:
            if candidates:
                candidates, _ = yield from self._select(candidates, stage)
        finalists = list(dict.fromkeys([*self._starts, *candidates]))
        best, _ = yield from self._select(finalists, Stage(1, self.stages[-1].samples))
        return best[0]

    def _offspring(self, parent: Genome) -> tuple[list[Genome], np.ndarray | None]:
        """The generation's offspring and the surrogate's prediction for each (None: drawn without it)."""
        drawn = distinct_offspring(parent, self.space, self.offspring * self.prescreen, self.rng)
        if self.prescreen == 1 or not self.surrogate.ready:
            return drawn[: self.offspring], None
        predicted = self.surrogate.predict(drawn)
        best = np.argsort(predicted, kind="stable")[: self.offspring]
        return [drawn[i] for i in best], predicted[best]

    def _select(self, candidates: list[Genome], stage: Stage, parent: Genome | None = None,
                generation: int | None = None, predicted: np.ndarray | None = None
                ) -> Generator[list[Trial], list[float], tuple[list[Genome], list[float]]]:
        """Score ``candidates`` on a fresh minibatch of the stage's size; its survivors and their fitness, best
        first. Without a generation they are seeds being screened. Every value also teaches the surrogate, and a
        prediction made before is scored against the values."""
        samples = self._draw(stage.samples)
        origin = self._origin if generation is not None else lambda _: "seed"
        fitness = yield [Trial(c, CALIBRATION, samples, (FITNESS,), origin(c), parent, generation)
                         for c in candidates]
        if predicted is not None:
            self._correlations.append(rank_correlation(list(predicted), fitness))
        if self.prescreen > 1:
            self.surrogate.observe(candidates, fitness)
        order = sorted(range(len(candidates)), key=lambda i: fitness[i])[: stage.survivors]
        return [candidates[i] for i in order], [fitness[i] for i in order]


def stage_samples(tokens: int, seq_len: int) -> int:
    """Samples needed to cover ``tokens`` at ``seq_len`` tokens per sample."""
    return max(1, math.ceil(tokens / seq_len))


class StageSpec(Closed):
    """One selection stage: score the remaining candidates on ``tokens`` fresh tokens, keep ``survivors``."""

    survivors: int = Field(ge=1)
    tokens: int = Field(ge=1)


def _default_stages() -> list[StageSpec]:
    return [StageSpec(survivors=2, tokens=1024), StageSpec(survivors=1, tokens=8192)]


BaselineChoice = BASELINES.union()


class SeedsSpec(Closed):
    """What EvoPress screens for its first parent besides the space's own start: the genomes of ``baselines`` (by
    method, or with their settings; unset: every cheap baseline that applies to the space) and ``random`` random
    genomes."""

    baselines: list[BaselineChoice | str] | None = None
    random: int = Field(8, ge=0, le=10_000)

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, baselines: list[BaselineSpec | str] | None) -> list[BaselineSpec | str] | None:
        for name in baselines or []:
            _check_known(name)
        return baselines


@STRATEGIES.register("evopress")
class EvoPressSpec(StrategySpec):
    """EvoPress at each budget of the space (a sweep when there are several), from ``warm_start``'s genomes (a
    baseline's method, or its settings), or else from the best of its ``seeds`` (null: from the space's own start,
    uniform or random, as studies stored before seeds existed)."""

    kind: Literal["evopress"] = "evopress"
    generations: int = Field(20, ge=1)
    offspring: int = Field(8, ge=1, le=100_000)
    stages: list[StageSpec] = Field(default_factory=_default_stages, min_length=1)
    warm_start: BaselineChoice | str | None = None
    seeds: SeedsSpec | None = Field(default_factory=SeedsSpec)
    noise_draws: int = Field(4, ge=0, le=1_000)  # once done: the fitness noise, on minibatches of the last stage
    prescreen: int = Field(1, ge=1, le=64)  # draw this many times the offspring, evaluate the surrogate's best

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

    @model_validator(mode="after")
    def _one_way_to_start(self) -> EvoPressSpec:
        if self.warm_start is not None and self.seeds is not None and "seeds" in self.model_fields_set:
            raise ValueError("give warm_start (start from that baseline) or seeds (screen several), not both")
        return self

    @field_validator("warm_start")
    @classmethod
    def _known_baseline(cls, warm_start: BaselineSpec | str | None) -> BaselineSpec | str | None:
        return warm_start if warm_start is None else _check_known(warm_start)

    def scoring_tokens(self) -> list[int]:
        return [s.tokens for s in self.stages]

    @property
    def screening(self) -> SeedsSpec | None:
        """The seeds screened for the first parent; none with a warm start."""
        return None if self.warm_start is not None else self.seeds

    def start_baselines(self, space_spec: SpaceSpec) -> list[str | BaselineSpec]:
        if self.warm_start is not None:
            return [self.warm_start]
        if self.seeds is None:
            return []
        if self.seeds.baselines is not None:
            return list(self.seeds.baselines)
        return [name for name, spec in BASELINES.items() if spec.cheap and not spec().problem_with(space_spec)]

    def problem_with(self, space_spec: SpaceSpec) -> str | None:
        field = "warm_start" if self.warm_start is not None else "seeds.baselines"
        for index, start in enumerate(self.start_baselines(space_spec)):
            baseline = BASELINES[start]() if isinstance(start, str) else start
            if problem := baseline.problem_with(space_spec):
                where = "" if self.warm_start is not None else f".{index}"
                return f"strategy.{field}{where}: {problem}"
        return None

    def identity(self, starts: list[BaselineSpec]) -> dict:
        # noise_draws only adds evaluations after the search, as baselines only add candidates: not the study's
        spec = self.model_dump(mode="json", exclude={"warm_start", "seeds", "noise_draws"})
        if self.prescreen == 1:
            del spec["prescreen"]  # as in studies stored before pre-screening existed
        if self.warm_start is not None:
            spec["warm_start"] = starts[0].settings()
        elif self.seeds is not None:
            spec["seeds"] = {"baselines": [start.settings() for start in starts], "random": self.seeds.random}
        return spec

    def build(self, space: Space, space_spec: SpaceSpec, setting: SearchSetting,
              starts: list[list[Genome]] | None = None) -> Strategy:
        budgets = space_spec.budget_spaces(space)
        given = starts or [[] for _ in budgets]
        return one_or_sweep({label: self._evopress(at, setting, genomes)
                             for (label, at), genomes in zip(budgets.items(), given, strict=True)})

    def _evopress(self, space: Space, setting: SearchSetting, baselines: list[Genome]) -> EvoPress:
        stages = [Stage(s.survivors, stage_samples(s.tokens, setting.seq_len)) for s in self.stages]
        own = [] if self.warm_start is not None or space.start() is None else [space.start()]
        return EvoPress(space, generations=self.generations, offspring=self.offspring, stages=stages,
                        pool_size=setting.pool_size, seed=setting.seed, starts=[*own, *baselines],
                        random_starts=self.screening.random if self.screening is not None else 0,
                        noise_draws=self.noise_draws, prescreen=self.prescreen)


def _check_known(baseline: BaselineSpec | str) -> BaselineSpec | str:
    if isinstance(baseline, str) and baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; expected one of {', '.join(BASELINES.names)}")
    return baseline
