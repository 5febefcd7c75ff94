"""Batched inference-only forward passes, and the compact per-token view of their outputs that evaluators use."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


def batched_logits(model: nn.Module, tokens: torch.Tensor, batch_size: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, float32 logits [rows, seq, vocab]) for ``tokens`` [samples, seq]; the caller owns the logits."""
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            rows = slice(start, min(start + batch_size, tokens.shape[0]))
            yield rows, model(input_ids=tokens[rows], use_cache=False).logits.float()


@dataclass(frozen=True)
class TokenOutputs:
    """What the evaluators need of a forward pass, per token, instead of the full vocabulary.

    ``top_logprobs`` [b, seq, k] are log-probabilities at the given ids, ``rest_logprob`` [b, seq] the log of the mass
    outside them, ``next_logprobs`` [b, seq - 1] the log-probability of each next token of the input.
    """

    top_logprobs: torch.Tensor
    rest_logprob: torch.Tensor
    next_logprobs: torch.Tensor


def compact(logits: torch.Tensor, tokens: torch.Tensor, ids: torch.Tensor) -> TokenOutputs:
    """Summarise ``logits`` at ``ids`` [b, seq, k]; overwrites ``logits``.

    One exponential per vocabulary entry, computed in place: a log-softmax plus a masked log-sum-exp would cost two
    passes and a vocabulary-sized copy, a visible share of a small model's whole forward on CPU (benchmarks/).
    """
    next_logits = logits[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1)
    top = logits.gather(-1, ids)
    shift = logits.amax(-1, keepdim=True)
    rest_mass = logits.scatter_(-1, ids, float("-inf")).sub_(shift).exp_().sum(-1, keepdim=True)
    lse = shift + (rest_mass + (top - shift).exp().sum(-1, keepdim=True)).log()
    rest = (rest_mass.log() + shift - lse).squeeze(-1)
    return TokenOutputs(top - lse, rest, next_logits - lse[:, :-1, 0])
