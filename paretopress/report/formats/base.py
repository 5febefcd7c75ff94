"""What an export format is: a file layout a runtime serves, written from a materialised candidate and read back.

The export re-measures held-out metrics on what ``load`` reads back, so every format is checked against the store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from paretopress.kernel.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from paretopress.evaluators.teacher import TeacherOutputs
    from paretopress.spaces.base import Space
    from paretopress.spaces.genome import Genome


class ExportFormat(ABC):
    name: str

    @abstractmethod
    def write(self, space: Space, model: PreTrainedModel, genome: Genome, tokenizer: PreTrainedTokenizerBase,
              out: Path) -> list[Path]:
        """Write ``genome`` of ``space`` (applied to the dense ``model``, which it may change) into ``out``; return
        the files that hold its weights, whose bytes are the export's size."""

    @abstractmethod
    def load(self, out: Path) -> nn.Module:
        """The written model as ``transformers`` loads it, in float32, for re-measuring."""

    def runtime_metrics(self, out: Path, tokens: torch.Tensor, teacher: TeacherOutputs,
                        names: tuple[str, ...]) -> dict[str, dict[str, float]]:
        """The held-out metrics as the serving runtime the format is for computes them from the written files, by
        runtime name; none where ``load`` already is that runtime."""
        return {}


FORMATS: Registry[type[ExportFormat]] = Registry("export format", tag="format", default="transformers")
