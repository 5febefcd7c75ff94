"""The shared shape of the per-linear space kinds (sparsity, quant): a space over the decoder's linears whose levels
live in a level database built on ``calibration_samples`` calibration samples."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING

from pydantic import Field

from paretopress.spaces.specs.base import Inputs, SpaceSpec

if TYPE_CHECKING:
    from torch import nn

    from paretopress.spaces.linear import LinearSpace


class LinearSpaceSpec(SpaceSpec):
    calibration_samples: int = Field(32, ge=1)
    tie: bool = False  # q/k/v and gate/up share one level (runtimes fuse them)

    @abstractmethod
    def space(self, model: nn.Module) -> LinearSpace:
        """Units, levels, exact costs and budget, without the level database (a joint space attaches it)."""

    def build(self, inputs: Inputs) -> LinearSpace:
        space = self.space(inputs.model)  # the budget is checked before any level is built
        inputs.attach_levels(space, self.calibration_samples)
        return space
