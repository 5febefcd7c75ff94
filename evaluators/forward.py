"""Batched inference-only forward passes: the one place a candidate model is run."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def batched_logprobs(model: nn.Module, tokens: torch.Tensor, batch_size: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, log-probabilities [rows, seq, vocab] in float32) for ``tokens`` [samples, seq]."""
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            rows = slice(start, min(start + batch_size, tokens.shape[0]))
            logits = model(input_ids=tokens[rows], use_cache=False).logits
            yield rows, torch.log_softmax(logits.float(), dim=-1)
