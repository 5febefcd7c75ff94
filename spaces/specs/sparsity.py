"""``kind: sparsity``: unstructured sparsity per decoder linear at an exact average."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from paretopress.spaces.specs.base import SPACES
from paretopress.spaces.specs.linear import LinearSpaceSpec

if TYPE_CHECKING:
    from torch import nn

    from paretopress.spaces.sparsity import SparsitySpace


@SPACES.register("sparsity")
class SparsitySpaceSpec(LinearSpaceSpec):
    """Unstructured sparsity per decoder linear at an exact average ``sparsity`` (0.5 = half the weights removed).

    Levels are up to ``levels`` steps of ``step`` removed weights either side of ``sparsity``, never below 0% or
    above 100% per layer (``step`` defaults to what lets a median-sized layer span that whole range);
    ``calibration_samples`` calibration samples of ``evaluation.seq_len`` tokens feed Wanda and SparseGPT.
    """

    kind: Literal["sparsity"] = "sparsity"
    sparsity: float
    builder: Literal["magnitude", "wanda", "sparsegpt"] = "wanda"
    levels: int = Field(4, ge=1, le=100)
    step: int | None = Field(None, ge=1)

    def space(self, model: nn.Module) -> SparsitySpace:
        from paretopress.spaces.sparsity import SparsitySpace

        return SparsitySpace(model, self.sparsity, self.builder, self.levels, self.step, self.tie)

    def budget_text(self) -> str:
        return f"sparsity={self.sparsity}"
