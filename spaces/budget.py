"""Inequality budgets: a sum of per-unit, per-level costs that may not exceed a bound, such as a time budget.

Exact budgets (blocks dropped, average sparsity or bits) are level sums kept by switch groups. A time budget is not:
every unit's levels cost different, measured amounts, so no level switch keeps the sum fixed. A space with a ``Limit``
has no switch groups; strategies mutate its genomes freely and ``Space.repair`` brings each one back within the
limit and onto its boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

NANOSECOND = 1e-9


@dataclass(frozen=True)
class Limit:
    """sum over units of ``costs[unit][level]`` <= ``bound``; integers, so sums are exact in any order."""

    costs: tuple[tuple[int, ...], ...]
    bound: int

    def total(self, levels: Sequence[int]) -> int:
        return sum(cost[level] for cost, level in zip(self.costs, levels, strict=True))

    def fits(self, levels: Sequence[int]) -> bool:
        return self.total(levels) <= self.bound


@dataclass(frozen=True)
class TimeTable:
    """Measured seconds of every unit at every level on one device, and of the dense model end to end.

    The model's time is what its units take plus a remainder no unit owns (embeddings, LM head, norms, overheads):
    ``dense - prunable`` with ``prunable`` the units' dense times. A genome's estimate is that remainder plus its
    units' times at their levels, so the dense genome's estimate is the measured ``dense`` exactly.
    """

    seconds: tuple[tuple[float, ...], ...]
    dense: float
    device: str

    @property
    def prunable(self) -> float:
        return math.fsum(unit[0] for unit in self.seconds)

    @property
    def consistent(self) -> bool:
        """Whether the units take less than the whole model, as they must; noise on a loaded machine can break it."""
        return self.prunable < self.dense

    def estimate(self, levels: Sequence[int]) -> float:
        """Estimated seconds of the model at these levels."""
        return self.dense - self.prunable + math.fsum(s[level] for s, level in zip(self.seconds, levels, strict=True))

    def budget(self, speedup: float) -> float:
        """T = t_base / speedup - (t_base - t_prunable): the time the units may take for ``speedup`` end to end."""
        return self.dense / speedup - (self.dense - self.prunable)

    def limit(self, speedup: float) -> Limit:
        """The time budget of ``speedup`` as a limit in integer nanoseconds (unit times rounded up, so it holds)."""
        costs = tuple(tuple(math.ceil(s / NANOSECOND) for s in unit) for unit in self.seconds)
        return Limit(costs, math.floor(self.budget(speedup) / NANOSECOND))

    def fastest(self) -> float:
        """The largest speedup the units allow: every unit at its fastest level."""
        return self.dense / self.estimate([min(range(len(s)), key=s.__getitem__) for s in self.seconds])
