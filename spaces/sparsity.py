"""The sparsity space: unstructured sparsity per decoder linear layer, in absolute steps of removed weights.

As in EvoPress, a level is a count of removed weights, not a fraction: with ``r_u = round(s * numel_u)``, unit
``u`` at offset ``k`` removes ``r_u + k * step`` weights, with the same ``step`` for every unit. Raising one unit a
level and lowering another therefore leaves the total number of non-zeros unchanged, so every genome of the space
has exactly the same average sparsity (the uniform genome's, every unit at ``s``), known to the weight. A unit has
the offsets ``-L..L`` that keep it between 0 and 100% sparse (``L`` = ``levels_per_side``), so small layers have
fewer levels than large ones; the default ``step`` lets a median-sized layer span the whole range.
"""

from __future__ import annotations

import statistics
from typing import Literal

import torch
from torch import nn

from paretopress.kernel.errors import UserError
from paretopress.spaces import levels
from paretopress.spaces.genome import Genome
from paretopress.spaces.linear import LinearSpace

SparsityBuilder = Literal["magnitude", "wanda", "sparsegpt"]
NESTED = ("magnitude", "wanda")  # builders whose masks are nested: stored once as a removal order


class SparsitySpace(LinearSpace):
    kind = "sparsity"

    def __init__(self, model: nn.Module, sparsity: float, builder: SparsityBuilder, levels_per_side: int,
                 step: int | None = None, tie: bool = False) -> None:
        super().__init__(model, tie)
        if not 0 < sparsity < 1:
            raise UserError(f"sparsity budget {sparsity:g} is impossible: average sparsity must lie strictly "
                            "between 0 and 1 (e.g. 0.5 for 50%)")
        self.sparsity, self.builder, self.levels_per_side = sparsity, builder, levels_per_side
        self.needs_calibration = builder != "magnitude"
        base = [round(sparsity * n) for n in self.numels]
        side = levels_per_side
        self.step = step if step is not None else max(1, round(min(sparsity, 1 - sparsity)
                                                               * statistics.median(self.numels) / side))
        below = [min(side, b // self.step) for b in base]
        above = [min(side, (n - b) // self.step) for b, n in zip(base, self.numels, strict=True)]
        if not any(below) or not any(above):
            raise UserError(f"sparsity step {self.step} is impossible: no layer can move one step of {self.step} "
                            f"weights from {sparsity:g} sparsity; choose a smaller step")
        self.offsets = tuple(below)  # level of unit u = its offset k + below[u]
        self.removed = tuple(tuple(b + k * self.step for k in range(-lo, hi + 1))
                             for b, lo, hi in zip(base, below, above, strict=True))
        self.num_levels = tuple(len(r) for r in self.removed)
        self.switch_groups = (tuple(range(len(self.units))),)
        self.group_targets = (sum(below),)

    def uniform(self) -> Genome:
        """Every unit at the budget's sparsity (offset 0)."""
        return Genome(self.offsets)

    def identity(self) -> dict:
        return {"kind": self.kind, "builder": self.builder, "removed": self.removed}

    def cost(self, genome: Genome) -> dict[str, float]:
        removed = sum(r[level] for r, level in zip(self.removed, genome.levels, strict=True))
        return {"params": self.total_params - removed, "sparsity": removed / sum(self.numels)}

    def kept_cost(self, kept: dict[int, int], params: float) -> dict[str, float]:
        return {"params": params - sum(self.removed[i][level] for i, level in kept.items())}

    def describe(self) -> dict:
        return {"kind": self.kind, "sparsity": self.sparsity, "builder": self.builder,
                "levels_per_side": self.levels_per_side, "step": self.step, "tie": self.tie, "units": list(self.units)}

    def build_unit(self, index: int, weight: torch.Tensor, xtx: torch.Tensor | None) -> dict[str, torch.Tensor]:
        unit, removed = self.units[index], list(self.removed[index])
        if self.builder == "sparsegpt":
            pruned = levels.sparsegpt(weight, xtx, removed).to(weight.dtype)
            return {f"{unit}.{level}": pruned[level].contiguous() for level in range(len(removed))}
        position = levels.magnitude_positions(weight) if self.builder == "magnitude" else (
            levels.wanda_positions(weight, xtx))
        return {f"{unit}.removal": levels.removal_levels(position, removed)}

    def level_weight(self, index: int, level: int, dense: torch.Tensor) -> torch.Tensor:
        unit = self.units[index]
        if self.builder in NESTED:
            return dense.detach().masked_fill(self._stored(f"{unit}.removal") <= level, 0)
        return self._stored(f"{unit}.{level}")
