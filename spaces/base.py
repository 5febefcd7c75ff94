"""The interface every search space implements, shared by every strategy and operator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import numpy as np

from paretopress.spaces.budget import Limit
from paretopress.spaces.genome import Genome

if TYPE_CHECKING:  # strategies and operators use spaces without torch
    import torch
    from torch import nn

    from paretopress.spaces.gguf_types import TensorType
    from paretopress.spaces.levels import QuantizedWeight


class Space(ABC):
    """Units, their ordered levels, the budget rule, and how a genome is materialised on a model.

    Budgets are kept exact by construction: a genome is feasible iff, within every switch group, the sum of
    levels equals the group's target. Operators that move one unit up and another of the same group down
    (EvoPress' level switch) therefore never leave the feasible set. A space may instead (or also) have a ``limit``,
    an inequality budget such as a time budget, over the units in no switch group (``free_units``), which ``repair``
    restores after free mutations; a joint space has both (blocks dropped exactly, GGUF bytes at most).
    """

    kind: str
    units: tuple[str, ...]
    num_levels: tuple[int, ...]
    switch_groups: tuple[tuple[int, ...], ...]
    group_targets: tuple[int, ...]
    limit: Limit | None = None

    def is_feasible(self, genome: Genome) -> bool:
        if len(genome.levels) != len(self.units):
            return False
        if any(not 0 <= level < n for level, n in zip(genome.levels, self.num_levels, strict=True)):
            return False
        return all(
            sum(genome.levels[i] for i in group) == target
            for group, target in zip(self.switch_groups, self.group_targets, strict=True)
        ) and (self.limit is None or self.limit.fits(genome.levels))

    def dense(self) -> Genome:
        """The uncompressed model: every unit at level 0 (outside the budget, a reference point)."""
        return Genome((0,) * len(self.units))

    def start(self) -> Genome | None:
        """Where a search starts without a warm start: a fixed genome (such as the uniform one, so the study also
        confirms it at the same budget), or None for a random feasible genome."""
        return None

    def reconstruction_inputs(self) -> tuple[str, ...] | None:
        """The modules whose input statistics (X^T X) measure this space's levels by layer reconstruction error
        (``reconstruction_errors``); None where only the model's output can measure them."""
        return None

    def reconstruction_errors(self, model: nn.Module, hessians: dict[str, torch.Tensor]) -> list[list[float]]:
        """Relative reconstruction error of every unit at every level, for spaces with ``reconstruction_inputs``."""
        raise NotImplementedError(f"{self.kind} spaces have no reconstruction error")

    @property
    def free_units(self) -> tuple[int, ...]:
        """The units in no switch group: under a limit, the ones free mutations and ``repair`` move."""
        grouped = {i for group in self.switch_groups for i in group}
        return tuple(i for i in range(len(self.units)) if i not in grouped)

    def random_genome(self, rng: np.random.Generator) -> Genome:
        """A uniformly drawn feasible genome: each group's level mass spread one step at a time.

        Under a limit: every free unit at a uniformly drawn level, then repaired.
        """
        levels = [0] * len(self.units)
        if self.limit is not None:
            for i in self.free_units:
                levels[i] = int(rng.integers(self.num_levels[i]))
        for group, target in zip(self.switch_groups, self.group_targets, strict=True):
            for _ in range(target):
                open_units = [i for i in group if levels[i] < self.num_levels[i] - 1]
                levels[open_units[rng.integers(len(open_units))]] += 1
        genome = Genome(tuple(levels))
        return genome if self.limit is None else self.repair(genome, rng)

    def nearest(self, targets: list[float]) -> Genome:
        """The feasible genome closest to real-valued per-unit levels (how one-shot methods meet the budget exactly).

        Each target is rounded and clipped to the unit's levels; then, one step at a time, each switch group moves
        the unit furthest from its target in the direction its budget needs (ties: the lowest index).
        """
        levels = [min(max(round(t), 0), n - 1) for t, n in zip(targets, self.num_levels, strict=True)]
        for group, target in zip(self.switch_groups, self.group_targets, strict=True):
            while (excess := sum(levels[i] for i in group) - target) != 0:
                step = -1 if excess > 0 else 1
                movable = [i for i in group if 0 <= levels[i] + step < self.num_levels[i]]
                unit = max(movable, key=lambda i: (step * (targets[i] - levels[i]), -i))
                levels[unit] += step
        return Genome(tuple(levels))

    def repair(self, genome: Genome, rng: np.random.Generator) -> Genome:
        """The genome brought within ``limit`` and onto its boundary, by random single-level steps of free units.

        While over the limit, a random unit that can be compressed further moves up a level; then, while some unit
        can move down a level and stay within the limit, a random one of them does. The result fits, and no single
        step towards the dense model does: a search spends its whole budget.
        """
        levels, limit, free = list(genome.levels), self.limit, self.free_units
        total = limit.total(levels)
        while total > limit.bound:
            can_rise = [i for i in free if levels[i] < self.num_levels[i] - 1]
            unit = can_rise[rng.integers(len(can_rise))]
            total += limit.costs[unit][levels[unit] + 1] - limit.costs[unit][levels[unit]]
            levels[unit] += 1
        while can_fall := [i for i in free
                           if levels[i] and total - limit.costs[i][levels[i]] + limit.costs[i][levels[i] - 1]
                           <= limit.bound]:
            unit = can_fall[rng.integers(len(can_fall))]
            total += limit.costs[unit][levels[unit] - 1] - limit.costs[unit][levels[unit]]
            levels[unit] -= 1
        return Genome(tuple(levels))

    def as_mapping(self, genome: Genome) -> dict[str, int]:
        """unit name -> level, for humans and export files."""
        return dict(zip(self.units, genome.levels, strict=True))

    @abstractmethod
    def unit_blocks(self) -> tuple[int, ...]:
        """The decoder block each unit belongs to, in unit order: genomes that agree on a block's units compute the
        same residual stream through it, which is what a stage's evaluation shares."""

    @abstractmethod
    def cost(self, genome: Genome) -> dict[str, float]:
        """Exact costs of a genome (e.g. ``{"params": ...}``), computed without touching weights."""

    @abstractmethod
    def describe(self) -> dict:
        """JSON-able description stored with the study (kind, units, levels, budget)."""

    @abstractmethod
    def applied(self, model: nn.Module, genome: Genome) -> AbstractContextManager[nn.Module]:
        """Materialise ``genome`` on ``model`` in place, without copying weights; undone on exit."""

    def gguf_tensors(self, model: nn.Module, genome: Genome) -> dict[nn.Module, tuple[TensorType, np.ndarray]]:
        """The linears of ``model`` whose GGUF type the genome chose, with that type and the bytes a GGUF file stores;
        none where the candidate's float weights are the model itself (blocks dropped, weights zeroed)."""
        return {}

    def quantized_weights(self, model: nn.Module, genome: Genome) -> dict[nn.Module, QuantizedWeight]:
        """The linears of ``model`` the genome quantizes group-wise, with their codes, scales and zero points; none
        where the candidate's float weights are the model itself (and for GGUF types, see ``gguf_tensors``)."""
        return {}

    @abstractmethod
    def materialise(self, model: nn.Module, genome: Genome) -> nn.Module:
        """Make ``genome`` permanent on ``model`` (smaller shapes where possible) for export; not undone."""
