"""The interface every search space implements, shared by every strategy and operator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager

import numpy as np
from torch import nn

from paretopress.spaces.genome import Genome


class Space(ABC):
    """Units, their ordered levels, the budget rule, and how a genome is materialised on a model.

    Budgets are kept exact by construction: a genome is feasible iff, within every switch group, the sum of
    levels equals the group's target. Operators that move one unit up and another of the same group down
    (EvoPress' level switch) therefore never leave the feasible set.
    """

    kind: str
    units: tuple[str, ...]
    num_levels: tuple[int, ...]
    switch_groups: tuple[tuple[int, ...], ...]
    group_targets: tuple[int, ...]

    def is_feasible(self, genome: Genome) -> bool:
        if len(genome.levels) != len(self.units):
            return False
        if any(not 0 <= level < n for level, n in zip(genome.levels, self.num_levels, strict=True)):
            return False
        return all(
            sum(genome.levels[i] for i in group) == target
            for group, target in zip(self.switch_groups, self.group_targets, strict=True)
        )

    def dense(self) -> Genome:
        """The uncompressed model: every unit at level 0 (outside the budget, a reference point)."""
        return Genome((0,) * len(self.units))

    def random_genome(self, rng: np.random.Generator) -> Genome:
        """A uniformly drawn feasible genome: each group's level mass spread one step at a time."""
        levels = [0] * len(self.units)
        for group, target in zip(self.switch_groups, self.group_targets, strict=True):
            for _ in range(target):
                open_units = [i for i in group if levels[i] < self.num_levels[i] - 1]
                levels[open_units[rng.integers(len(open_units))]] += 1
        return Genome(tuple(levels))

    def as_mapping(self, genome: Genome) -> dict[str, int]:
        """unit name -> level, for humans and export files."""
        return dict(zip(self.units, genome.levels, strict=True))

    @abstractmethod
    def cost(self, genome: Genome) -> dict[str, float]:
        """Exact costs of a genome (e.g. ``{"params": ...}``), computed without touching weights."""

    @abstractmethod
    def describe(self) -> dict:
        """JSON-able description stored with the study (kind, units, levels, budget)."""

    @abstractmethod
    def applied(self, model: nn.Module, genome: Genome) -> AbstractContextManager[nn.Module]:
        """Materialise ``genome`` on ``model`` in place, without copying weights; undone on exit."""

    @abstractmethod
    def materialise(self, model: nn.Module, genome: Genome) -> nn.Module:
        """Make ``genome`` permanent on ``model`` (smaller shapes where possible) for export; not undone."""
