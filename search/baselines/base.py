"""The interface every one-shot baseline implements, and the calibration passes they share."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from paretopress.evaluators.calibration import calibration_xtx
from paretopress.evaluators.forward import model_device
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome


@dataclass
class Calibration:
    """The dense model and the calibration samples a baseline reads, and the forward passes it spends on them.

    ``passes`` counts whole passes over ``tokens`` (the baseline's cost next to its seconds): ShortGPT needs one,
    FinerCut one per removal it tries.
    """

    model: nn.Module
    tokens: torch.Tensor  # [samples, seq]
    batch_size: int
    passes: int = 0
    _dense: list[torch.Tensor] | None = field(default=None, repr=False)

    def batches(self) -> Iterator[torch.Tensor]:
        """One (counted) pass over the calibration tokens, batch by batch, on the model's device."""
        self.passes += 1
        device = model_device(self.model)
        for start in range(0, self.tokens.shape[0], self.batch_size):
            yield self.tokens[start:start + self.batch_size].to(device)

    def run(self, model: nn.Module) -> Iterator[torch.Tensor]:
        """Next-token log-probabilities [batch, seq, vocab] of ``model`` over one pass."""
        with torch.inference_mode():
            for batch in self.batches():
                yield torch.log_softmax(model(input_ids=batch, use_cache=False).logits.float(), dim=-1)

    def divergence(self, space: Space, genome: Genome) -> float:
        """Mean Jensen-Shannon divergence per token between the dense model and ``genome`` applied to it.

        The dense distributions are computed on first use, before any genome is applied, and kept.
        """
        if self._dense is None:
            self._dense = list(self.run(self.model))
        total, count = 0.0, 0
        with space.applied(self.model, genome) as model:
            for dense, candidate in zip(self._dense, self.run(model), strict=True):
                total += float(jensen_shannon(dense, candidate).double().sum())
                count += dense.shape[0] * dense.shape[1]
        return total / count

    def statistic(self, units: tuple[str, ...], statistic: Callable[[torch.Tensor], torch.Tensor] | None = None
                  ) -> dict[str, torch.Tensor]:
        """Per-unit sums over one pass of a statistic of the unit's inputs (X^T X unless given), by unit name."""
        self.passes += 1
        extra = {} if statistic is None else {"statistic": statistic}
        return calibration_xtx(self.model, units, self.tokens, self.batch_size, **extra)


def jensen_shannon(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """JS divergence per position between two log-distributions over the last axis (FinerCut's criterion)."""
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)
    return 0.5 * ((log_p.exp() * (log_p - log_m)).sum(-1) + (log_q.exp() * (log_q - log_m)).sum(-1))


class Baseline(ABC):
    """A one-shot method: from the dense model and calibration data straight to genomes, no search.

    ``spaces`` are one space under several budgets (a depth sweep) or a single space; a baseline computes its
    statistics once and returns one genome per space, each meeting that space's budget exactly.
    """

    @abstractmethod
    def propose(self, spaces: list[Space], calibration: Calibration) -> list[Genome]:
        """One feasible genome per space, in order."""
