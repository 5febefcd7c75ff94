"""Sample pools: token samples and the dense model's outputs on them, named by the part of the text they come from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the pool names are read by strategies, which import no torch
    import torch

    from paretopress.evaluators.teacher import TeacherOutputs

CALIBRATION = "calibration"  # what searches and baselines read
HELDOUT = "heldout"  # what reports and fronts are measured on; never seen by a search
CONFIRMATION = "confirmation"  # text of another source (evaluation.heldout_data), only where a job asks for it


@dataclass(frozen=True)
class SampleSet:
    """A pool of token samples [samples, seq] and the dense model's outputs on them."""

    tokens: torch.Tensor
    teacher: TeacherOutputs

    def to(self, device: str) -> SampleSet:
        return SampleSet(self.tokens.to(device), self.teacher.to(device))
