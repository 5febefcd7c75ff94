"""``kind: joint``: two or three of depth, sparsity and quant (or depth and gguf) in one genome, a budget each."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import SerializerFunctionWrapHandler, model_serializer, model_validator

from paretopress.kernel.errors import UserError
from paretopress.spaces.specs.base import SPACES, Inputs, SpaceSpec
from paretopress.spaces.specs.depth import DepthSpaceSpec
from paretopress.spaces.specs.gguf import GgufSpaceSpec
from paretopress.spaces.specs.quant import QuantSpaceSpec
from paretopress.spaces.specs.sparsity import SparsitySpaceSpec

if TYPE_CHECKING:
    from paretopress.spaces.base import Space


@SPACES.register("joint")
class JointSpaceSpec(SpaceSpec):
    """Two or three of depth, sparsity and quant in one genome, or depth and gguf, each with its own budget.

    ``depth.drop`` must be one number here. The sparsity, quant and gguf budgets are averages over every decoder
    linear, dropped blocks included; the cost of each candidate (parameters, bytes) counts only what it keeps.
    Sparsity next to quant masks each quantized weight, so its builder must give masks (magnitude or wanda), and both
    budgets must be exact (quant bit-widths evenly spaced below 16).
    """

    kind: Literal["joint"]
    depth: DepthSpaceSpec | None = None
    quant: QuantSpaceSpec | None = None
    sparsity: SparsitySpaceSpec | None = None
    gguf: GgufSpaceSpec | None = None

    @model_validator(mode="after")
    def _two_components(self) -> JointSpaceSpec:
        if sum(c is not None for c in (self.depth, self.quant, self.sparsity, self.gguf)) < 2:
            raise ValueError("a joint space needs at least two of depth, sparsity and quant (or depth and gguf)")
        if self.gguf is not None and (self.quant is not None or self.sparsity is not None):
            raise ValueError("gguf: a joint space takes gguf next to depth only")
        if self.depth is not None and isinstance(self.depth.drop, list):
            raise ValueError("depth.drop: a joint space takes one budget, not a list")
        if self.quant is not None and self.sparsity is not None and self.sparsity.builder == "sparsegpt":
            raise ValueError("sparsity.builder: next to quant, sparsity needs mask levels (magnitude or wanda), "
                             "not sparsegpt")
        return self

    @model_serializer(mode="wrap")
    def _as_stored(self, handler: SerializerFunctionWrapHandler) -> dict:
        """Without ``gguf`` when there is none, as joint studies were stored before it existed."""
        data = handler(self)
        if data.get("gguf") is None:
            data.pop("gguf", None)
        return data

    def has_cost(self, name: str) -> bool:
        return any(c is not None and c.has_cost(name) for c in (self.depth, self.sparsity, self.quant, self.gguf))

    @property
    def linears(self) -> list[QuantSpaceSpec | SparsitySpaceSpec | GgufSpaceSpec]:
        """The per-linear components present, sparsity first."""
        return [c for c in (self.sparsity, self.quant, self.gguf) if c is not None]

    def build(self, inputs: Inputs) -> Space:
        from paretopress.spaces.depth import DepthSpace
        from paretopress.spaces.joint import JointSpace
        from paretopress.spaces.sparsequant import SparseQuantSpace

        linears = [component.space(inputs.model) for component in self.linears]
        if len(linears) == 2 and any(linear.limit is not None for linear in linears):
            raise UserError("space.quant.widths: next to sparsity both budgets must be exact, so the bit-widths must "
                            "be evenly spaced and below 16 (e.g. 2,3,4,5,6)")
        for component, linear in zip(self.linears, linears, strict=True):
            inputs.attach_levels(linear, component.calibration_samples)
        linear = SparseQuantSpace(*linears) if len(linears) == 2 else linears[0]
        if self.depth is None:
            return linear
        return JointSpace(DepthSpace(inputs.model, self.depth.granularity, self.depth.budgets[0]), linear)

    def budget_text(self) -> str:
        return ", ".join(c.budget_text() for c in (self.depth, self.sparsity, self.quant, self.gguf) if c is not None)
