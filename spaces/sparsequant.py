"""Sparsity x quant on the same linears: a sparsity level and a bit-width per unit in one genome, both budgets exact.

The genome is the sparsity genome followed by the quant genome; switch groups stay within a component, so EvoPress'
level switch keeps the exact average sparsity and the exact average bits (over every weight, as if dense) at once.
A unit's weight is its bit-width's dequantized weight with its sparsity level's mask applied, so the sparsity levels
must be nested masks (magnitude or Wanda). ``bytes`` is what a sparse quantized layout holds: codes for the kept
weights only, every group's float16 scale and zero point, and a one-bit-per-weight mask for every unit that removes
any weight. It depends on how the two genomes pair up, so it varies between genomes of one budget pair, and ``cost``
reports it exactly.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from torch import nn

from paretopress.kernel.errors import UserError
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome
from paretopress.spaces.quant import QuantSpace
from paretopress.spaces.sparsity import NESTED, SparsitySpace

if TYPE_CHECKING:
    import numpy as np

    from paretopress.spaces.gguf_types import TensorType

COMPONENTS = ("sparsity", "bits")


class SparseQuantSpace(Space):
    kind = "sparsequant"

    def __init__(self, sparsity: SparsitySpace, quant: QuantSpace) -> None:
        if sparsity.builder not in NESTED:
            raise UserError(f"sparsity x quant needs mask levels: sparsity builder magnitude or wanda, not "
                            f"{sparsity.builder}")
        if sparsity.units != quant.units:
            raise UserError("sparsity x quant needs the same units in both: give both the same `tie`")
        self.sparsity, self.quant = sparsity, quant
        count = len(sparsity.units)
        self.units = tuple(f"{u}:{c}" for c in COMPONENTS for u in sparsity.units)
        self.num_levels = sparsity.num_levels + quant.num_levels
        self.switch_groups = sparsity.switch_groups + tuple(tuple(i + count for i in g) for g in quant.switch_groups)
        self.group_targets = sparsity.group_targets + quant.group_targets

    def split(self, genome: Genome) -> tuple[Genome, Genome]:
        cut = len(self.sparsity.units)
        return Genome(genome.levels[:cut]), Genome(genome.levels[cut:])

    def start(self) -> Genome:
        return self.uniform()

    def uniform(self) -> Genome:
        """Both components uniform: every unit at the budget's sparsity and the most even spread of bit-widths."""
        return Genome(self.sparsity.uniform().levels + self.quant.uniform().levels)

    def unit_bytes(self, index: int, sparsity_level: int, quant_level: int) -> float:
        removed = self.sparsity.removed[index][sparsity_level]
        mask = self.quant.numels[index] if removed else 0
        kept_codes = self.quant.widths[quant_level] * (self.quant.numels[index] - removed)
        return (kept_codes + self.quant.group_bits(index, quant_level) + mask) / 8

    def unit_blocks(self) -> tuple[int, ...]:
        return self.sparsity.unit_blocks() + self.quant.unit_blocks()

    def cost(self, genome: Genome) -> dict[str, float]:
        sparsity_genome, quant_genome = self.split(genome)
        kept = dict(enumerate(genome.levels))
        return {**self.quant.cost(quant_genome), **self.sparsity.cost(sparsity_genome),
                **self.kept_cost(kept, self.sparsity.total_params)}

    def kept_cost(self, kept: dict[int, int], params: float) -> dict[str, float]:
        """Parameters and bytes when only the ``kept`` genome positions' units remain (a joint space drops others)."""
        count = len(self.sparsity.units)
        levels = {i: level for i, level in kept.items() if i < count}
        pairs = {i: (level, kept[i + count]) for i, level in levels.items()}
        return {**self.sparsity.kept_cost(levels, params),
                "bytes": sum(self.unit_bytes(i, s, q) for i, (s, q) in pairs.items())}

    def describe(self) -> dict:
        return {"kind": self.kind, "sparsity": self.sparsity.describe(), "quant": self.quant.describe(),
                "units": list(self.units)}

    def applied(self, model: nn.Module, genome: Genome) -> AbstractContextManager[nn.Module]:
        """Each linear gets its bit-width's (cached) dequantized weight, masked at its sparsity level (a new tensor)."""
        sparsity_genome, quant_genome = self.split(genome)
        weights = ((i, self.sparsity.level_weight(i, s, self.quant.cached_weight(model, i, q)))
                   for i, (s, q) in enumerate(zip(sparsity_genome.levels, quant_genome.levels, strict=True)))
        return self.quant.swapped(model, weights)

    def gguf_tensors(self, model: nn.Module, genome: Genome) -> dict[nn.Module, tuple[TensorType, np.ndarray]]:
        return self.quant.gguf_tensors(model, self.split(genome)[1])

    def materialise(self, model: nn.Module, genome: Genome) -> nn.Module:
        sparsity_genome, quant_genome = self.split(genome)
        for index, (s, q) in enumerate(zip(sparsity_genome.levels, quant_genome.levels, strict=True)):
            quantized = self.quant.level_weight(index, q, self.quant.dense_weight(model, index).detach().clone())
            self.quant.write(model, index, self.sparsity.level_weight(index, s, quantized))
        return model
