"""The depth space: drop whole decoder blocks, or attention and MLP sub-layers separately."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from paretopress.kernel.errors import UserError
from paretopress.kernel.params import count_parameters
from paretopress.spaces.anatomy import Anatomy, read_anatomy
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome
from paretopress.spaces.pruned import DroppedAttention, DroppedMLP

Granularity = Literal["block", "sublayer"]


class DepthSpace(Space):
    """Units are blocks (level 1 = dropped) or, with ``granularity="sublayer"``, every attention and MLP.

    The budget is the exact number of dropped units; all units form one switch group. In sublayer mode the
    parameter count therefore varies between genomes of one budget, and is reported exactly by ``cost``.
    """

    kind = "depth"

    def __init__(self, model: nn.Module, granularity: Granularity, drop: int) -> None:
        self.anatomy: Anatomy = read_anatomy(model)
        self.granularity = granularity
        layers = self.anatomy.layers(model)
        if granularity == "block":
            self.units = tuple(self.anatomy.layer_name(i) for i in range(len(layers)))
            sizes = [count_parameters(layer) for layer in layers]
        else:
            self.units, sizes = (), []
            for i, layer in enumerate(layers):
                for part, norms in ((self.anatomy.attention, self.anatomy.attention_norms),
                                    (self.anatomy.mlp, self.anatomy.mlp_norms)):
                    self.units += (f"{self.anatomy.layer_name(i)}.{part}",)
                    sizes.append(sum(count_parameters(getattr(layer, n)) for n in (part, *norms)))
        self.unit_params = tuple(sizes)
        self.total_params = count_parameters(model)
        self.num_levels = (2,) * len(self.units)
        self.switch_groups = (tuple(range(len(self.units))),)
        self._set_budget(drop)

    def _set_budget(self, drop: int) -> None:
        if not 1 <= drop < len(self.units):
            raise UserError(
                f"depth budget drop={drop} is impossible: the model has {len(self.units)} {self.granularity} units, "
                f"so drop must be between 1 and {len(self.units) - 1}"
            )
        self.drop = drop
        self.group_targets = (drop,)

    def at_budget(self, drop: int) -> DepthSpace:
        """The same units and costs under another budget, for sweeps; shares everything else with this space."""
        other = copy.copy(self)
        other._set_budget(drop)
        return other

    def unit_blocks(self) -> tuple[int, ...]:
        per_block = 1 if self.granularity == "block" else 2
        return tuple(i // per_block for i in range(len(self.units)))

    def cost(self, genome: Genome) -> dict[str, float]:
        dropped = sum(size for size, level in zip(self.unit_params, genome.levels, strict=True) if level)
        return {"params": self.total_params - dropped, "dropped": sum(genome.levels)}

    def describe(self) -> dict:
        return {"kind": self.kind, "granularity": self.granularity, "drop": self.drop, "units": list(self.units)}

    def kept_blocks(self, genome: Genome) -> list[int]:
        """Indices of the blocks that keep at least one sub-layer."""
        per_block = 1 if self.granularity == "block" else 2
        levels = genome.levels
        return [b for b in range(self.anatomy.num_layers) if not all(levels[b * per_block:(b + 1) * per_block])]

    @contextmanager
    def applied(self, model: nn.Module, genome: Genome) -> Iterator[nn.Module]:
        """Skip dropped blocks by handing the model a shorter layer list; stub dropped sub-layers and their norms."""
        original = self.anatomy.layers(model)
        swapped: list[tuple[nn.Module, str, nn.Module]] = []
        if self.granularity == "sublayer":
            for unit, level in zip(self.units, genome.levels, strict=True):
                if level:
                    layer_path, _, part = unit.rpartition(".")
                    layer = model.get_submodule(layer_path)
                    swapped += stub_sublayer(self.anatomy, layer, part)
        kept = self.kept_blocks(genome)
        try:
            with self.anatomy.running(model, [original[b] for b in kept], kept):
                yield model
        finally:
            for layer, name, module in reversed(swapped):
                setattr(layer, name, module)

    def materialise(self, model: nn.Module, genome: Genome) -> nn.Module:
        """Remove dropped blocks physically; zero every weight of a dropped sub-layer inside a kept block, and of the
        norms that only serve it (as ``applied`` removes them, so the non-zero parameters are the same).

        A sub-layer whose weights (and biases) are all zero adds exactly zero to the residual stream, whatever its
        norms do, so plain ``transformers`` loads the result and computes what the search measured.
        """
        if self.granularity == "sublayer":
            with torch.no_grad():
                for unit, level in zip(self.units, genome.levels, strict=True):
                    if level:
                        layer_path, _, part = unit.rpartition(".")
                        layer = model.get_submodule(layer_path)
                        for name in (part, *self.anatomy.norms_of(part)):
                            for parameter in getattr(layer, name).parameters():
                                parameter.zero_()
        keep_blocks(model, self.anatomy, self.kept_blocks(genome))
        return model


def stub_sublayer(anatomy: Anatomy, layer: nn.Module, part: str) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace one sub-layer (and the norms that only serve it) by stand-ins; return what to put back."""
    swapped = [(layer, part, getattr(layer, part))]
    setattr(layer, part, DroppedAttention() if part == anatomy.attention else DroppedMLP())
    for norm in anatomy.norms_of(part):
        swapped.append((layer, norm, getattr(layer, norm)))
        setattr(layer, norm, nn.Identity())
    return swapped


def keep_blocks(model: nn.Module, anatomy: Anatomy, kept: list[int]) -> None:
    """Remove every block not in ``kept`` physically, renumbering the rest and shrinking the config to match."""
    layers = anatomy.layers(model)
    anatomy.replace_layers(model, [layers[b] for b in kept], kept)  # per-layer config lists such as layer_types too
    for new_index, layer in enumerate(anatomy.layers(model)):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    model.config.num_hidden_layers = len(kept)
