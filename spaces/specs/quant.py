"""``kind: quant``: a bit-width per decoder linear at an average number of bits per weight."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from paretopress.spaces.specs.base import SPACES
from paretopress.spaces.specs.linear import LinearSpaceSpec

if TYPE_CHECKING:
    from torch import nn

    from paretopress.spaces.quant import QuantSpace


@SPACES.register("quant")
class QuantSpaceSpec(LinearSpaceSpec):
    """A bit-width per decoder linear at an average of ``bits`` bits per weight (scales and zero points counted).

    ``widths`` are the bit-widths to choose from (2 to 8, and 16 for unquantized), quantized group-wise
    (``group_size`` input columns share a float16 scale and an integer zero point) by round-to-nearest or GPTQ.
    Evenly spaced widths below 16 give every genome exactly the same budget; others keep each genome at most at it.
    ``symmetric`` quantization stores no zero points (the middle code is zero), as compressed-tensors checkpoints
    need (``export --format compressed-tensors``).
    """

    costs: ClassVar[tuple[str, ...]] = ("params", "bytes")  # bytes: what the searched tensors store
    kind: Literal["quant"] = "quant"
    bits: float
    widths: list[int] = Field(default_factory=lambda: [2, 3, 4, 5, 6])
    group_size: int = Field(128, ge=1)
    builder: Literal["rtn", "gptq"] = "gptq"
    symmetric: bool = False

    @model_serializer(mode="wrap")
    def _as_stored(self, handler: SerializerFunctionWrapHandler) -> dict:
        """Without ``symmetric`` when false, as quant studies were stored before it existed."""
        data = handler(self)
        if not data.get("symmetric", True):
            data.pop("symmetric")
        return data

    def space(self, model: nn.Module) -> QuantSpace:
        from paretopress.spaces.quant import QuantSpace

        return QuantSpace(model, self.bits, self.widths, self.builder, self.group_size, self.tie, self.symmetric)

    def budget_text(self) -> str:
        return f"bits={self.bits}"
