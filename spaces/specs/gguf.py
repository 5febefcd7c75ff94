"""``kind: gguf``: a GGUF tensor type per decoder linear at most at an average number of bits per weight."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from paretopress.spaces.specs.base import SPACES
from paretopress.spaces.specs.linear import LinearSpaceSpec

if TYPE_CHECKING:
    from torch import nn

    from paretopress.spaces.gguf import GgufSpace

DEFAULT_TYPES = ("Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q4_K", "Q4_0", "Q3_K", "Q2_K")


@SPACES.register("gguf")
class GgufSpaceSpec(LinearSpaceSpec):
    """A GGUF tensor type per decoder linear, every genome at most ``bits`` bits per weight over them as the file
    stores them (block scales included).

    ``types`` are the GGUF types to choose from (F16, BF16, Q8_0, Q6_K, Q5_1, Q5_K, Q5_0, Q4_1, Q4_K, Q4_0, Q3_K,
    Q2_K), quantized as llama.cpp's reference quantizers do; each linear chooses among those its row length allows
    (K-quants need rows of a multiple of 256 weights). ``embeddings`` is the one type of the token embeddings and an
    untied output head, not searched and outside the budget (the exported file's size counts it).
    ``paretopress export --format gguf`` writes the chosen bytes.
    """

    costs: ClassVar[tuple[str, ...]] = ("params", "bytes")  # bytes: what the searched tensors store
    kind: Literal["gguf"] = "gguf"
    bits: float
    types: list[str] = Field(default_factory=lambda: list(DEFAULT_TYPES), min_length=2)
    embeddings: str = "F16"
    builder: Literal["rtn", "imatrix"] = "rtn"  # imatrix: Q4_0 / Q5_0 weighted by the calibration inputs

    def space(self, model: nn.Module) -> GgufSpace:
        from paretopress.spaces.gguf import GgufSpace

        return GgufSpace(model, self.bits, self.types, self.tie, self.embeddings, self.builder)

    def budget_text(self) -> str:
        return f"bits={self.bits}"
