"""Joint spaces: depth x quant, depth x sparsity or depth x gguf in one genome, one budget per component.

The genome is the depth genome followed by the linear space's genome; switch groups stay within a component, so
the level switch keeps both budgets exact (blocks dropped, and the average bits or sparsity over all decoder
linears). A linear space whose budget is a limit (gguf bytes, uneven quant bit-widths) keeps it here too: the limit
covers the linear units only, which mutations then move freely and ``repair`` brings back within it.
``cost`` reports what the assembled candidate really holds: the linears of dropped blocks count for
nothing, so its parameters (sparsity) or bytes (quant) vary between genomes of one budget pair, exactly known.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from torch import nn

from paretopress.spaces.base import Space
from paretopress.spaces.budget import Limit
from paretopress.spaces.depth import DepthSpace
from paretopress.spaces.genome import Genome
from paretopress.spaces.linear import LinearSpace
from paretopress.spaces.sparsequant import SparseQuantSpace

if TYPE_CHECKING:
    import numpy as np

    from paretopress.spaces.gguf_types import TensorType
    from paretopress.spaces.levels import QuantizedWeight


class JointSpace(Space):
    kind = "joint"

    def __init__(self, depth: DepthSpace, linear: LinearSpace | SparseQuantSpace) -> None:
        self.depth, self.linear = depth, linear
        self.units = depth.units + linear.units
        self.num_levels = depth.num_levels + linear.num_levels
        offset = len(depth.units)
        self.switch_groups = depth.switch_groups + tuple(tuple(i + offset for i in g) for g in linear.switch_groups)
        self.group_targets = depth.group_targets + linear.group_targets
        if linear.limit is not None:  # the depth units cost nothing in it
            self.limit = Limit(tuple((0,) * n for n in depth.num_levels) + linear.limit.costs, linear.limit.bound)

    def split(self, genome: Genome) -> tuple[Genome, Genome]:
        cut = len(self.depth.units)
        return Genome(genome.levels[:cut]), Genome(genome.levels[cut:])

    def unit_blocks(self) -> tuple[int, ...]:
        return self.depth.unit_blocks() + self.linear.unit_blocks()

    def cost(self, genome: Genome) -> dict[str, float]:
        depth_genome, linear_genome = self.split(genome)
        depth_cost = self.depth.cost(depth_genome)
        dropped = [f"{u}." for u, level in zip(self.depth.units, depth_genome.levels, strict=True) if level]
        kept = {i: level for i, (unit, level) in enumerate(zip(self.linear.units, linear_genome.levels, strict=True))
                if not unit.startswith(tuple(dropped))}
        return {**self.linear.cost(linear_genome), **depth_cost, **self.linear.kept_cost(kept, depth_cost["params"])}

    def describe(self) -> dict:
        return {"kind": self.kind, "depth": self.depth.describe(), self.linear.kind: self.linear.describe(),
                "units": list(self.units)}

    @contextmanager
    def applied(self, model: nn.Module, genome: Genome) -> Iterator[nn.Module]:
        """Swap the linears' weights first (by their original names), then skip the dropped blocks."""
        depth_genome, linear_genome = self.split(genome)
        with self.linear.applied(model, linear_genome), self.depth.applied(model, depth_genome):
            yield model

    def gguf_tensors(self, model: nn.Module, genome: Genome) -> dict[nn.Module, tuple[TensorType, np.ndarray]]:
        """The linear component's choices; those of dropped blocks are simply absent from the written file."""
        return self.linear.gguf_tensors(model, self.split(genome)[1])

    def quantized_weights(self, model: nn.Module, genome: Genome) -> dict[nn.Module, QuantizedWeight]:
        return self.linear.quantized_weights(model, self.split(genome)[1])

    def materialise(self, model: nn.Module, genome: Genome) -> nn.Module:
        depth_genome, linear_genome = self.split(genome)
        return self.depth.materialise(self.linear.materialise(model, linear_genome), depth_genome)
