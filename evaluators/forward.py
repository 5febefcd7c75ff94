"""Batched inference-only forward passes, and the compact per-token view of their outputs that evaluators use."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


def batched_logits(model: nn.Module, tokens: torch.Tensor, batch_size: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, float32 logits [rows, seq, vocab]) for ``tokens`` [samples, seq]; the caller owns the logits,
    which are on the model's device (each batch of ``tokens`` is moved there)."""
    device = model_device(model)
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            rows = slice(start, min(start + batch_size, tokens.shape[0]))
            yield rows, model(input_ids=tokens[rows].to(device), use_cache=False).logits.float()


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


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


class TailSample:
    """A fixed uniform sample of the vocabulary, for estimating the part of a softmax normaliser outside given ids.

    ``position[v]`` is v's place in the sample (-1 outside it), so the ids a token already counts exactly are taken
    out of its sample in O(k).
    """

    def __init__(self, vocab: int, size: int, device: str = "cpu", seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same sample on every device
        self.vocab = vocab
        ids = torch.randperm(vocab, generator=generator)[:min(size, vocab)].sort().values
        position = torch.full((vocab,), -1, dtype=torch.long)
        position[ids] = torch.arange(len(ids))
        self.ids, self.position = ids.to(device), position.to(device)


def head_problem(model: nn.Module) -> str | None:
    """Why ``estimated`` cannot stand in for this model's output head (None: it can)."""
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear):
        return f"its output head is a {type(head).__name__}, not a linear layer"
    if getattr(model.config, "final_logit_softcapping", None) or getattr(model.config, "logit_scale", None):
        return "its logits are soft-capped or scaled after the head"
    return None


def estimated(hidden: torch.Tensor, head: nn.Linear, tokens: torch.Tensor, ids: torch.Tensor, tail: TailSample,
              chunk: int = 256) -> TokenOutputs:
    """What ``compact`` gives, from the final hidden states [b, seq, h] without the full output head.

    The logits at ``ids`` [b, seq, k] and at each next token are exact (one row of the head each); the normaliser's
    part outside ``ids`` is estimated as (vocab - k) times the mean exponential over the tail sample's other ids.
    Costs about (k + 1 + sample) head rows per token instead of the whole vocabulary; the estimate's error against the
    exact KL is measured in ``benchmarks/throughput.py``.
    """
    b, seq, width = hidden.shape
    rows, flat_ids = hidden.reshape(-1, width).float(), ids.reshape(b * seq, -1)
    weight, bias = head.weight, None if head.bias is None else head.bias.float()  # rows made float32 once picked
    nexts = torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1).reshape(-1)  # the last position's is not used
    top = head_logits_at(rows, weight, flat_ids, chunk)
    next_logits = (weight[nexts].float() * rows).sum(-1)
    tail_logits = rows @ weight[tail.ids].float().T
    if bias is not None:
        top, next_logits, tail_logits = top + bias[flat_ids], next_logits + bias[nexts], tail_logits + bias[tail.ids]
    inside = tail.position[flat_ids]  # sample places of the ids counted exactly (-1: not in the sample)
    taken = inside.clamp(min=0)
    tail_logits.scatter_(1, taken, torch.where(inside >= 0, float("-inf"), tail_logits.gather(1, taken)))
    others = len(tail.ids) - (inside >= 0).sum(1, keepdim=True)
    rest = torch.logsumexp(tail_logits, 1, keepdim=True) - others.log() + math.log(tail.vocab - flat_ids.shape[1])
    lse = torch.logaddexp(torch.logsumexp(top, 1, keepdim=True), rest)
    shape = (b, seq)
    return TokenOutputs((top - lse).reshape(*shape, -1), (rest - lse).reshape(shape),
                        (next_logits[:, None] - lse).reshape(shape)[:, :-1])


def head_logits_at(rows: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor, chunk: int) -> torch.Tensor:
    """``rows[n] . weight[ids[n, j]]`` [n, k] for ids distinct within each row, in float32.

    On a CPU with a float32 head, one sampled dense-dense product over the (row, id) pattern: 16x faster there than
    gathering k head rows per token, which copies k x hidden floats per token (``benchmarks/RESULTS.md``). Elsewhere
    (a GPU, a half-precision head, which ``sampled_addmm`` does not take) the rows are gathered in chunks.
    """
    if rows.device.type != "cpu" or weight.dtype != torch.float32:
        return gathered_logits(rows, weight, ids, chunk)
    return sampled_product_logits(rows, weight, ids)


def gathered_logits(rows: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor, chunk: int) -> torch.Tensor:
    """``head_logits_at`` by gathering each token's k head rows, ``chunk`` tokens at a time."""
    return torch.cat([torch.bmm(weight[ids[i:i + chunk]].float(), rows[i:i + chunk, :, None]).squeeze(-1)
                      for i in range(0, rows.shape[0], chunk)])


def sampled_product_logits(rows: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``head_logits_at`` as one sampled dense-dense product (float32 on a CPU)."""
    count, k = ids.shape
    ordered, order = ids.sort(1)  # CSR wants each row's columns in order
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note that its CSR support is in beta
        pattern = torch.sparse_csr_tensor(torch.arange(0, count * k + 1, k), ordered.reshape(-1),
                                          rows.new_zeros(count * k), size=(count, weight.shape[0]),
                                          check_invariants=False)
        values = torch.sparse.sampled_addmm(pattern, rows, weight.T, beta=0.0).values().reshape(count, k)
    return torch.empty_like(values).scatter_(1, order, values)
