"""SPDY-style baseline: a knapsack dynamic programme over per-unit error tables, and the programme itself.

Each unit's error at each level is measured alone (everything else dense): for sparsity and quant spaces the relative
reconstruction error of the layer's output on calibration inputs, tr(dW H dW^T) / tr(W H W^T) with H = X^T X; for
depth and width spaces the JS divergence of the model with that one unit at that level. The programme then picks the
levels with the least summed error that meet the budget: exactly, within every switch group, for our level-sum
budgets; or at most a real-valued budget (a size or a time) with ``knapsack``.
"""

from __future__ import annotations

import math

import numpy as np

from paretopress.kernel.errors import UserError
from paretopress.search.baselines.base import Baseline, Calibration
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome


def knapsack(errors: list[list[float]], costs: list[list[float]], budget: float, resolution: int = 2000) -> list[int]:
    """One level per unit minimising the summed error with the summed cost at most ``budget``.

    Costs are rounded up to multiples of budget / resolution, so the answer never exceeds the budget (it may miss a
    slightly better one within that rounding).
    """
    if budget <= 0:
        raise UserError(f"knapsack budget must be positive, not {budget:g}")
    scale = resolution / budget
    grid = [[max(0, math.ceil(c * scale - 1e-9)) for c in unit] for unit in costs]
    return solve(errors, grid, resolution, exact=False)


def solve(errors: list[list[float]], costs: list[list[int]], capacity: int, exact: bool) -> list[int]:
    """The dynamic programme over integer costs: summed cost == capacity if ``exact``, else <= capacity.

    Only strict improvements replace a choice, so of equally good levels the lowest wins: the answer is deterministic.
    """
    best = np.full(capacity + 1, np.inf)
    best[0] = 0.0
    choices = []
    for unit_errors, unit_costs in zip(errors, costs, strict=True):
        reached, choice = np.full(capacity + 1, np.inf), np.full(capacity + 1, -1)
        for level, (error, cost) in enumerate(zip(unit_errors, unit_costs, strict=True)):
            if cost > capacity:
                continue
            shifted = np.full(capacity + 1, np.inf)
            shifted[cost:] = best[:capacity + 1 - cost] + error
            better = shifted < reached
            reached[better], choice[better] = shifted[better], level
        best = reached
        choices.append(choice)
    end = capacity if exact else int(np.argmin(best))
    if not np.isfinite(best[end]):
        raise UserError("no configuration of the space meets the budget")
    levels = []
    for unit_costs, choice in zip(reversed(costs), reversed(choices), strict=True):
        levels.append(int(choice[end]))
        end -= unit_costs[levels[-1]]
    return levels[::-1]


class SPDY(Baseline):
    def errors(self, space: Space, calibration: Calibration) -> list[list[float]]:
        """Error of every unit at every level, the others dense: by layer reconstruction where the space has it,
        else by the output divergence of the model with that one unit at that level (one pass each)."""
        inputs = space.reconstruction_inputs()
        if inputs is not None:
            return space.reconstruction_errors(calibration.model, calibration.statistic(inputs))
        dense = space.dense()
        return [[0.0, *(calibration.divergence(space, dense.with_levels({u: level}))
                        for level in range(1, space.num_levels[u]))] for u in range(len(space.units))]

    def propose(self, spaces: list[Space], calibration: Calibration) -> list[Genome]:
        errors = self.errors(spaces[0], calibration)
        genomes = []
        for space in spaces:
            if space.limit is not None:  # a time or size budget: at most the limit's bound, in its integer units
                costs = [list(unit) for unit in space.limit.costs]
                genomes.append(Genome(tuple(knapsack(errors, costs, space.limit.bound))))
                continue
            levels = [0] * len(space.units)
            for group, target in zip(space.switch_groups, space.group_targets, strict=True):
                chosen = solve([errors[i] for i in group], [list(range(space.num_levels[i])) for i in group],
                               target, exact=True)
                for unit, level in zip(group, chosen, strict=True):
                    levels[unit] = level
            genomes.append(Genome(tuple(levels)))
        return genomes
