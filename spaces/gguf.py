"""The gguf space: a GGUF tensor type per decoder linear, at most ``bits`` bits per weight as the file stores them.

A unit's levels are the configured types (``spaces/gguf_types.py``) whose blocks its row length allows, from the
most bits per weight to the fewest, so units differ in their levels: K-quants need rows of a multiple of 256 weights
(SmolLM2's 576-wide inputs allow only the 32-weight legacy types; its 1536-wide ``down_proj`` allows all). A level
costs exactly the bytes llama.cpp reads for that tensor, scales included. Such costs have no level switch that keeps
their sum fixed, so the budget is a ``Limit`` on the total: every genome stays at or below ``bits`` on average over
the linears, a search repairs its genomes onto that limit, and each candidate's exact average is reported.

Levels are built by llama.cpp's reference quantizers (``builder: rtn``, as ``llama-quantize`` without an importance
matrix) or with the calibration inputs' importance matrix (``builder: imatrix``: the diagonal of X^T X, each
column's summed squared input, as ``llama-quantize --imatrix`` weighs the error; Q4_0 and Q5_0 use it, the other
types have no weighted path here and quantize as with ``rtn``). The level database stores each quantized type's
bytes; a level's weight is what gguf dequantizes from them, so a candidate is evaluated on the weights its exported
file holds. Float types (F16, BF16) are the dense weight rounded, computed on use rather than stored. The matrices
no unit owns (embeddings, an untied output head) are written in one fixed type, ``embeddings`` (F16 unless told),
and candidates are evaluated with them encoded and decoded in it too; norms stay float32, as the file keeps them.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from torch import nn

from paretopress.kernel.errors import UserError
from paretopress.spaces.budget import Limit
from paretopress.spaces.genome import Genome
from paretopress.spaces.gguf_types import TYPES, TensorType
from paretopress.spaces.linear import LinearSpace

FLOAT_TYPES = ("F16", "BF16")  # rounded on use: nothing to store
GgufBuilder = Literal["rtn", "imatrix"]


class GgufSpace(LinearSpace):
    kind = "gguf"

    def __init__(self, model: nn.Module, bits: float, types: list[str], tie: bool = False,
                 embeddings: str = "F16", builder: GgufBuilder = "rtn") -> None:
        super().__init__(model, tie)
        self.builder = builder
        self.needs_calibration = builder == "imatrix"
        self.embeddings = _fixed_type(model, embeddings)
        unknown = [name for name in types if name not in TYPES]
        if unknown:
            raise UserError(f"GGUF type {unknown[0]!r} is not one the gguf space writes; choose from "
                            f"{', '.join(TYPES)}")
        self.type_names = tuple(name for name in TYPES if name in types)  # the most bits per weight first
        self.types = tuple(self._unit_types(unit, cols)
                           for unit, (_, cols) in zip(self.units, self.shapes, strict=True))
        self.num_levels = tuple(len(names) for names in self.types)
        self.weights = sum(self.numels)
        self.bits = bits
        self.switch_groups, self.group_targets = (), ()
        costs = tuple(tuple(self.unit_bits(i, level) for level in range(count))
                      for i, count in enumerate(self.num_levels))
        self.limit = Limit(costs, math.floor(bits * self.weights))
        self._check_budget()

    def _unit_types(self, unit: str, row_length: int) -> tuple[str, ...]:
        fitting = tuple(name for name in self.type_names if TYPES[name].fits(row_length))
        if not fitting:
            raise UserError(f"none of the GGUF types {list(self.type_names)} fits {unit}, whose rows hold {row_length} "
                            f"weights; add one whose block divides it (Q8_0, Q5_0 and Q4_0 take multiples of 32)")
        return fitting

    def unit_type(self, index: int, level: int) -> TensorType:
        return TYPES[self.types[index][level]]

    def unit_bits(self, index: int, level: int) -> int:
        rows, cols = self.shapes[index]
        return 8 * rows * self.unit_type(index, level).row_bytes(cols)

    def _check_budget(self) -> None:
        least = sum(costs[-1] for costs in self.limit.costs) / self.weights
        most = sum(costs[0] for costs in self.limit.costs) / self.weights
        if not least <= self.bits <= most:
            raise UserError(f"gguf budget {self.bits:g} bits per weight is impossible: with types "
                            f"{list(self.type_names)} on this model's linears (scales counted) the average lies "
                            f"between {least:.4f} and {most:.4f}")

    def uniform(self) -> Genome:
        return self.uniform_within_limit(lambda index, level: self.unit_type(index, level).bits_per_weight)

    def identity(self) -> dict:
        return {"kind": self.kind, "builder": self.builder, "types": self.type_names}

    def cost(self, genome: Genome) -> dict[str, float]:
        total = self.limit.total(genome.levels)
        return {"params": self.total_params, "bits": total / self.weights, "bytes": total / 8}

    def kept_cost(self, kept: dict[int, int], params: float) -> dict[str, float]:
        return {"bytes": sum(self.unit_bits(i, level) for i, level in kept.items()) / 8}

    def describe(self) -> dict:
        return {"kind": self.kind, "bits": self.bits, "types": list(self.type_names), "builder": self.builder,
                "tie": self.tie, "embeddings": self.embeddings.name, "budget": "at most", "units": list(self.units),
                "levels": {unit: list(names) for unit, names in zip(self.units, self.types, strict=True)}}

    def build_unit(self, index: int, weight: torch.Tensor, xtx: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """gguf's numpy quantizers, on the CPU."""
        array = weight.cpu().numpy()
        importance = torch.diagonal(xtx).float().cpu().numpy() if self.builder == "imatrix" else None
        return {f"{self.units[index]}.{name}": torch.from_numpy(TYPES[name].quantize(array, importance))
                for name in self.types[index] if name not in FLOAT_TYPES}

    def encoded(self, index: int, level: int, dense: torch.Tensor) -> np.ndarray:
        """The bytes the file stores for the unit at ``level``: uint8 [rows, row bytes], rows quantized alone."""
        name = self.types[index][level]
        if name in FLOAT_TYPES:
            return TYPES[name].quantize(dense.detach().float().numpy())
        return self._stored(f"{self.units[index]}.{name}").numpy()

    def level_weight(self, index: int, level: int, dense: torch.Tensor) -> torch.Tensor:
        """Dequantized by gguf from the level's bytes, on first use in a process (``cached_weight`` keeps it)."""
        data = self.encoded(index, level, dense)
        return torch.from_numpy(self.unit_type(index, level).dequantize(data, self.shapes[index]))

    @contextmanager
    def applied(self, model: nn.Module, genome: Genome) -> Iterator[nn.Module]:
        with super().applied(model, genome), self._fixed_matrices(model):
            yield model

    def materialise(self, model: nn.Module, genome: Genome) -> nn.Module:
        model = super().materialise(model, genome)
        with torch.no_grad():
            for module in _unowned(model):
                module.weight.copy_(self._fixed(module.weight)[1])
        return model

    @contextmanager
    def _fixed_matrices(self, model: nn.Module) -> Iterator[None]:
        """The embeddings and output head as the file holds them; a tied head shares the embedding's copy."""
        originals = [(module, module.weight) for module in _unowned(model)]
        for module, weight in originals:
            module.weight = self._fixed(weight)[1]
        try:
            yield
        finally:
            for module, weight in originals:
                module.weight = weight

    def _fixed(self, weight: torch.Tensor) -> tuple[np.ndarray, nn.Parameter]:
        """A matrix no unit owns in the ``embeddings`` type: its bytes and its decoded values, kept per process."""
        key = ("fixed", id(weight), weight.dtype)
        entry = self._cache.get(key)
        if entry is None or entry[0]() is not weight:  # Python reuses a freed tensor's id (an exported model's)
            data = self.embeddings.quantize(weight.detach().float().cpu().numpy())
            decoded = torch.from_numpy(self.embeddings.dequantize(data, tuple(weight.shape)))
            decoded = decoded.to(device=weight.device, dtype=weight.dtype)
            entry = self._cache[key] = (weakref.ref(weight), data, nn.Parameter(decoded, requires_grad=False))
        self._cache.move_to_end(key)
        return entry[1], entry[2]

    def gguf_tensors(self, model: nn.Module, genome: Genome) -> dict[nn.Module, tuple[TensorType, np.ndarray]]:
        """Each linear with its type and bytes: a row slice of its unit's (a tied unit's members are its row ranges);
        the embeddings and output head in their fixed type."""
        tensors = {module: (self.embeddings, self._fixed(module.weight)[0]) for module in _unowned(model)}
        for index, level in enumerate(genome.levels):
            data = self.encoded(index, level, self.dense_weight(model, index))
            parts = np.split(data, np.cumsum(self.rows[index])[:-1])  # as ``_split`` cuts a unit's weight
            for name, part in zip(self.members[index], parts, strict=True):
                tensors[model.get_submodule(name)] = (self.unit_type(index, level), part)
        return tensors


def _fixed_type(model: nn.Module, name: str) -> TensorType:
    """The type of the matrices no unit owns, checked against their row length."""
    if name not in TYPES:
        raise UserError(f"embeddings: GGUF type {name!r} is not one the gguf space writes; choose from "
                        f"{', '.join(TYPES)}")
    for module in _unowned(model):
        if not TYPES[name].fits(module.weight.shape[1]):
            raise UserError(f"embeddings: {name} needs rows of a multiple of {TYPES[name].block} weights, and the "
                            f"embeddings' rows hold {module.weight.shape[1]}; choose F16, Q8_0, Q5_0 or Q4_0")
    return TYPES[name]


def _unowned(model: nn.Module) -> list[nn.Module]:
    """The input embeddings and the output head (once where they are one module)."""
    modules = [model.get_input_embeddings(), model.get_output_embeddings()]
    return [m for i, m in enumerate(modules) if m is not None and all(m is not other for other in modules[:i])]
