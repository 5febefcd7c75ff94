"""The shared base of spaces whose units are the decoder's linear layers and whose levels live in a level database.

A subclass says how many levels each unit has, what they cost, which units may trade levels (switch groups), how
one unit's levels are computed (``build_unit``, run once when the database is built) and how a stored level becomes
a weight tensor (``level_weight``). Applying a genome swaps each linear's ``weight`` for that tensor and puts the
original back on exit; embeddings, norms and the LM head stay dense. Weights are handled as ``nn.Linear`` holds them,
[out, in], also for GPT-2's ``Conv1D`` projections (``anatomy.linear_weight``: a transposed view of their own).

With ``tie=True`` the linears that read the same input and that serving runtimes fuse (q/k/v, gate/up) form one
unit: their weights are stacked by rows into the matrix the fused kernel holds, levels are built for that matrix,
and applying a level gives each member a row slice of it (a view, not a copy).
"""

from __future__ import annotations

from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import torch
from torch import nn

from paretopress.kernel.params import count_parameters
from paretopress.spaces.anatomy import is_linear, linear_weight, read_anatomy, set_linear_weight
from paretopress.spaces.base import Space
from paretopress.spaces.database import LevelDatabase
from paretopress.spaces.genome import Genome

TIED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # leaf names fused by serving runtimes


def _tied_groups(names: list[str]) -> list[list[str]]:
    """The linears of one layer, those of a fused set (same parent module) grouped, in first-member order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        parent, _, leaf = name.rpartition(".")
        fused = next((t for t in TIED if leaf in t and all(f"{parent}.{m}" in names for m in t)), None)
        groups.setdefault(f"{parent}.{fused}" if fused else name, []).append(name)
    return list(groups.values())


class LinearSpace(Space):
    """Units: every projection (``anatomy.is_linear``) inside the decoder layers (or fused sets of them), in layer
    order."""

    builder: str
    needs_calibration: bool  # whether ``build_unit`` uses the calibration statistic X^T X

    def __init__(self, model: nn.Module, tie: bool = False) -> None:
        anatomy = read_anatomy(model)
        members: list[tuple[str, ...]] = []
        blocks: list[int] = []
        for index, layer in enumerate(anatomy.layers(model)):
            names = [f"{anatomy.layer_name(index)}.{n}" for n, m in layer.named_modules() if is_linear(m)]
            groups = [tuple(group) for group in (_tied_groups(names) if tie else [[n] for n in names])]
            members += groups
            blocks += [index] * len(groups)
        self.blocks = tuple(blocks)
        self.tie = tie
        self.members = tuple(members)
        self.units = tuple(g[0] if len(g) == 1 else "+".join([g[0], *(n.rpartition(".")[2] for n in g[1:])])
                           for g in members)
        weights = {n: linear_weight(model.get_submodule(n)) for g in members for n in g}
        self.rows = tuple(tuple(weights[n].shape[0] for n in g) for g in members)
        self.shapes: tuple[tuple[int, int], ...] = tuple(
            (sum(rows), weights[g[0]].shape[1]) for rows, g in zip(self.rows, members, strict=True)
        )
        self.numels = tuple(rows * cols for rows, cols in self.shapes)
        self.total_params = count_parameters(model)
        self.database: LevelDatabase | None = None
        self._cache: OrderedDict[tuple[int, int, torch.dtype, torch.device], torch.Tensor] = OrderedDict()

    def __getstate__(self) -> dict:
        """Workers get the database's path and key, never tensors; each process fills its own cache."""
        return {**self.__dict__, "_cache": OrderedDict()}

    def attach(self, database: LevelDatabase) -> None:
        self.database = database

    @abstractmethod
    def identity(self) -> dict:
        """Everything that determines the stored levels (for the database's cache key)."""

    @abstractmethod
    def build_unit(self, index: int, weight: torch.Tensor, xtx: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Every stored tensor of one unit, named ``{unit}.*``; ``xtx`` is X^T X of its calibration inputs."""

    @abstractmethod
    def level_weight(self, index: int, level: int, dense: torch.Tensor) -> torch.Tensor:
        """The weight of unit ``index`` at ``level`` from the database (``dense`` is the unit's own dense weight)."""

    @abstractmethod
    def kept_cost(self, kept: dict[int, int], params: float) -> dict[str, float]:
        """Exact size of a model with ``params`` parameters whose linears are only the ``kept`` units (index -> level).

        For joint spaces, where other components remove some of this space's units.
        """

    def calibration_inputs(self) -> tuple[str, ...]:
        """The first member of each unit: the members of a tied unit read the same input."""
        return tuple(group[0] for group in self.members)

    def unit_levels(self, model: nn.Module, index: int, xtx: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Built where the model is (``xtx`` is there too)."""
        return self.build_unit(index, self.dense_weight(model, index).detach().float(), xtx)

    def dense_weight(self, model: nn.Module, index: int) -> torch.Tensor:
        """The unit's weight as stored by the model; members of a tied unit stacked by rows (a copy only then)."""
        weights = [linear_weight(model.get_submodule(name)) for name in self.members[index]]
        return weights[0] if len(weights) == 1 else torch.cat(weights)

    def _split(self, index: int, weight: torch.Tensor) -> list[torch.Tensor]:
        """A unit's weight cut back into its members' row slices (views)."""
        return list(torch.split(weight, self.rows[index]))

    def unit_blocks(self) -> tuple[int, ...]:
        return self.blocks

    def start(self) -> Genome:
        return self.uniform()

    def reconstruction_inputs(self) -> tuple[str, ...]:
        return self.calibration_inputs()

    def reconstruction_errors(self, model: nn.Module, hessians: dict[str, torch.Tensor]) -> list[list[float]]:
        """tr(dW H dW^T) / tr(W H W^T) of every unit at every level, H = X^T X of the unit's input; computed where the
        model is, from levels assembled on the CPU, where their databases are."""
        table = []
        for index, group in enumerate(self.members):
            h = hessians[group[0]].double()
            dense = self.dense_weight(model, index).detach()
            energy = float(((dense.double() @ h) * dense.double()).sum())
            row = []
            for level in range(self.num_levels[index]):
                weight = self.level_weight(index, level, dense.cpu().clone()).to(dense.device)
                delta = weight.double() - dense.double()
                row.append(float(((delta @ h) * delta).sum()) / energy)
            table.append(row)
        return table

    def uniform(self) -> Genome:
        """The most uniform feasible genome: within each switch group, levels differ by at most one."""
        levels = [0] * len(self.units)
        for group, target in zip(self.switch_groups, self.group_targets, strict=True):
            base, extra = divmod(target, len(group))
            raised = {group[int(i)] for i in np.linspace(0, len(group), extra, endpoint=False)} if extra else set()
            for i in group:
                levels[i] = base + (i in raised)
        return Genome(tuple(levels))

    def uniform_within_limit(self, rate: Callable[[int, int], float]) -> Genome:
        """The most uniform genome under ``limit``, ``rate(unit, level)`` being a level's bits per weight.

        Every unit at its first level of at most the same rate, the highest rate for which that fits (a unit with no
        level that low at its last), then, in unit order, units given their next level up while that still fits
        (deterministic, unlike ``repair``).
        """
        rates = sorted({rate(i, level) for i, count in enumerate(self.num_levels) for level in range(count)},
                       reverse=True)
        for threshold in rates:
            levels = [next((level for level in range(count) if rate(i, level) <= threshold), count - 1)
                      for i, count in enumerate(self.num_levels)]
            if self.limit.fits(levels):
                break
        for i in range(len(levels)):
            if levels[i]:
                levels[i] -= 1
                if not self.limit.fits(levels):
                    levels[i] += 1
        return Genome(tuple(levels))

    def cached_weight(self, model: nn.Module, index: int, level: int) -> torch.Tensor:
        """A level's weight, kept in a per-process LRU cache holding at most twice as many tensors as there are units.

        Stored views (SparseGPT levels) cost nothing to keep; masked and dequantized tensors are computed on first
        use in this process and then reused, so a search that revisits levels does not recompute them.
        """
        weight = model.get_submodule(self.members[index][0]).weight
        key = (index, level, weight.dtype, weight.device)  # models of two dtypes or devices never share a tensor
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        # a copy for tied units, only on a miss; levels are computed on the CPU, where their databases are
        dense = self.dense_weight(model, index).detach().cpu()
        tensor = self.level_weight(index, level, dense).to(device=weight.device, dtype=weight.dtype)
        self._cache[key] = tensor
        if len(self._cache) > 2 * len(self.units):
            self._cache.popitem(last=False)
        return tensor

    def applied(self, model: nn.Module, genome: Genome) -> AbstractContextManager[nn.Module]:
        """Swap each linear's weight for its level's tensor (a reference, not a copy); restore the originals."""
        return self.swapped(model, ((i, self.cached_weight(model, i, level)) for i, level in enumerate(genome.levels)))

    @contextmanager
    def swapped(self, model: nn.Module, weights: Iterable[tuple[int, torch.Tensor]]) -> Iterator[nn.Module]:
        """Give each unit's linears row slices of its new weight (views); put the original weights back on exit."""
        originals = {name: model.get_submodule(name).weight for group in self.members for name in group}
        try:
            for index, weight in weights:
                for name, part in zip(self.members[index], self._split(index, weight), strict=True):
                    set_linear_weight(model.get_submodule(name), part)
            yield model
        finally:
            for name, original in originals.items():
                model.get_submodule(name).weight = original

    def materialise(self, model: nn.Module, genome: Genome) -> nn.Module:
        """Write every level's weights into the model (copies, owned by the model, for ``save_pretrained``)."""
        for index, level in enumerate(genome.levels):
            self.write(model, index, self.level_weight(index, level, self.dense_weight(model, index).detach().clone()))
        return model

    def write(self, model: nn.Module, index: int, weight: torch.Tensor) -> None:
        """Copy a unit's new weight into its linears' own tensors."""
        with torch.no_grad():
            for name, part in zip(self.members[index], self._split(index, weight), strict=True):
                linear_weight(model.get_submodule(name)).copy_(part)

    def _stored(self, name: str) -> torch.Tensor:
        if self.database is None:
            raise RuntimeError(f"{self.kind} space has no level database attached")
        return self.database.tensor(name)
