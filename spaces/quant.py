"""The quant space: a bit-width per decoder linear layer, group-wise asymmetric quantization.

Each group of ``group_size`` input columns of a row has a float16 scale and an integer zero point of the same width
as the codes, so a unit of ``numel`` weights in ``G`` groups at ``b`` bits costs ``b * (numel + G) + 16 * G`` bits.
Symmetric quantization has no zero point (the middle code is zero): ``b * numel + 16 * G`` bits.
Width 16 means unquantized: the model's own weight, ``16 * numel`` bits in a half-precision checkpoint.

With evenly spaced widths below 16 a level step changes a unit's cost by the same amount at every level, and units
switch levels only with units of the same ``(numel, G)``: each switch group keeps a fixed level sum, hence the
average bits per weight (scales and zero points counted) of every genome is the same, known exactly (EvoPress).
Other widths (2, 3, 4, 8 or 4, 16) have steps of unequal cost, which no level switch keeps exact; their budget is a
``Limit`` on the total bits instead: every genome stays at or below ``bits``, a search repairs its genomes onto that
limit (no single step towards the dense model still fits), and each candidate's exact average is reported.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from paretopress.kernel.errors import UserError
from paretopress.spaces import levels
from paretopress.spaces.budget import Limit
from paretopress.spaces.genome import Genome
from paretopress.spaces.linear import LinearSpace

if TYPE_CHECKING:
    import numpy as np

    from paretopress.spaces.gguf_types import TensorType

QuantBuilder = Literal["rtn", "gptq"]
SUPPORTED_BITS = (*range(2, 9), 16)
UNQUANTIZED = 16
SCALE_BITS = 16


class QuantSpace(LinearSpace):
    kind = "quant"

    def __init__(self, model: nn.Module, bits: float, widths: list[int], builder: QuantBuilder,
                 group_size: int = 128, tie: bool = False, symmetric: bool = False) -> None:
        super().__init__(model, tie)
        self.symmetric = symmetric
        self.widths = tuple(sorted(set(widths), reverse=True))  # level 0 = the most bits
        _check_widths(self.widths)
        self.builder, self.group_size = builder, group_size
        self.needs_calibration = builder == "gptq"
        self.groups_per_unit = tuple(rows * math.ceil(cols / group_size) for rows, cols in self.shapes)
        self.weights = sum(self.numels)
        self.num_levels = (len(self.widths),) * len(self.units)
        self.bits = bits
        self._check_budget(bits)
        if self.exact:
            classes: dict[tuple[int, int], list[int]] = {}
            for i, shape_class in enumerate(zip(self.numels, self.groups_per_unit, strict=True)):
                classes.setdefault(shape_class, []).append(i)
            self.switch_groups = tuple(tuple(members) for members in classes.values())
            self.group_targets = self._targets(bits)
        else:
            self.switch_groups, self.group_targets = (), ()
            costs = tuple(tuple(self.unit_bits(i, level) for level in range(len(self.widths)))
                          for i in range(len(self.units)))
            self.limit = Limit(costs, math.floor(bits * self.weights))

    @property
    def exact(self) -> bool:
        """Whether every genome has exactly the budget (level switches), rather than at most it (a limit)."""
        return UNQUANTIZED not in self.widths and len({a - b for a, b in itertools.pairwise(self.widths)}) == 1

    def unit_bits(self, index: int, level: int) -> int:
        width = self.widths[level]
        if width == UNQUANTIZED:
            return width * self.numels[index]
        return width * self.numels[index] + self.group_bits(index, level)

    def group_bits(self, index: int, level: int) -> int:
        """Bits of the unit's scales and zero points at ``level`` (none at the unquantized width)."""
        width, groups = self.widths[level], self.groups_per_unit[index]
        if width == UNQUANTIZED:
            return 0
        return (0 if self.symmetric else width * groups) + SCALE_BITS * groups

    def _average(self, levels_per_unit: list[int]) -> float:
        return sum(self.unit_bits(i, level) for i, level in enumerate(levels_per_unit)) / self.weights

    def _extremes(self) -> tuple[float, float]:
        """The average bits of the most compressed genome and of the least."""
        top = len(self.widths) - 1
        return self._average([top] * len(self.units)), self._average([0] * len(self.units))

    def _check_budget(self, bits: float) -> None:
        least, most = self._extremes()
        if not least <= bits <= most:
            raise UserError(
                f"quant budget {bits:g} average bits is impossible: with bit-widths {sorted(self.widths)} and group "
                f"size {self.group_size} (scales and zero points counted) the average lies between {least:.4f} and "
                f"{most:.4f}"
            )

    def _targets(self, bits: float) -> tuple[int, ...]:
        """Level sums per switch group whose average is the largest not above ``bits`` that spreads evenly.

        The same fraction of level steps is taken in every group (rounded up, so the budget is never exceeded);
        the resulting exact average is what ``cost`` reports for every genome.
        """
        top = len(self.widths) - 1
        least, most = self._extremes()
        fraction = (most - bits) / (most - least)
        return tuple(min(len(g) * top, math.ceil(fraction * len(g) * top - 1e-9)) for g in self.switch_groups)

    def uniform(self) -> Genome:
        if self.exact:
            return super().uniform()
        return self.uniform_within_limit(lambda index, level: self.widths[level])

    def identity(self) -> dict:
        identity = {"kind": self.kind, "builder": self.builder, "widths": self.widths, "group_size": self.group_size}
        return {**identity, "symmetric": True} if self.symmetric else identity  # as asymmetric databases were keyed

    def cost(self, genome: Genome) -> dict[str, float]:
        total = sum(self.unit_bits(i, level) for i, level in enumerate(genome.levels))
        return {"params": self.total_params, "bits": total / self.weights, "bytes": total / 8}

    def kept_cost(self, kept: dict[int, int], params: float) -> dict[str, float]:
        return {"bytes": sum(self.unit_bits(i, level) for i, level in kept.items()) / 8}

    def describe(self) -> dict:
        described = {"kind": self.kind, "bits": self.bits, "widths": list(self.widths), "group_size": self.group_size,
                     "builder": self.builder, "tie": self.tie, "budget": "exact" if self.exact else "at most",
                     "units": list(self.units)}
        return {**described, "symmetric": True} if self.symmetric else described

    def gguf_tensors(self, model: nn.Module, genome: Genome) -> dict[nn.Module, tuple[TensorType, np.ndarray]]:
        raise UserError("a quant genome's group-wise codes have no GGUF type: search kind gguf to export GGUF, or "
                        "export it with --format transformers")

    def quantized_weights(self, model: nn.Module, genome: Genome) -> dict[nn.Module, levels.QuantizedWeight]:
        """Each quantized linear's row slice of its unit's codes (the unquantized width is left out)."""
        weights = {}
        for index, level in enumerate(genome.levels):
            width = self.widths[level]
            if width == UNQUANTIZED:
                continue
            prefix = f"{self.units[index]}.{width}"
            parts = (levels.unpack_bits(self._stored(f"{prefix}.codes"), width, self.shapes[index]),
                     self._stored(f"{prefix}.scale"), self._stored(f"{prefix}.zero"))
            for name, codes, scale, zero in zip(self.members[index], *(self._split(index, t) for t in parts),
                                                strict=True):
                weights[model.get_submodule(name)] = levels.QuantizedWeight(width, self.group_size, self.symmetric,
                                                                             codes, scale, zero)
        return weights

    def build_unit(self, index: int, weight: torch.Tensor, xtx: torch.Tensor | None) -> dict[str, torch.Tensor]:
        widths = [w for w in self.widths if w != UNQUANTIZED]  # the unquantized level is the model's own weight
        quantized = (levels.gptq(weight, xtx, widths, self.group_size, self.symmetric) if self.builder == "gptq"
                     else levels.rtn(weight, widths, self.group_size, self.symmetric))
        unit, stored = self.units[index], {}
        for level, width in enumerate(widths):
            stored[f"{unit}.{width}.codes"] = levels.pack_bits(quantized.codes[level], width)
            stored[f"{unit}.{width}.scale"] = quantized.scale[level].contiguous()
            stored[f"{unit}.{width}.zero"] = quantized.zero[level].contiguous()
        return stored

    def level_weight(self, index: int, level: int, dense: torch.Tensor) -> torch.Tensor:
        """Dequantized from the packed codes on first use in a process (the database holds no float copies)."""
        if self.widths[level] == UNQUANTIZED:
            return dense
        prefix = f"{self.units[index]}.{self.widths[level]}"
        codes = levels.unpack_bits(self._stored(f"{prefix}.codes"), self.widths[level], self.shapes[index])
        return levels.dequantize(codes, self._stored(f"{prefix}.scale"), self._stored(f"{prefix}.zero"),
                                 self.group_size)


def _check_widths(widths: tuple[int, ...]) -> None:
    unsupported = [w for w in widths if w not in SUPPORTED_BITS]
    if unsupported:
        raise UserError(f"bit-width {unsupported[0]} is not supported: choose bit-widths from 2 to 8, and 16 for "
                        "unquantized")
    if len(widths) < 2:
        raise UserError(f"the quant space needs at least two bit-widths to choose from, not {list(widths)}")
