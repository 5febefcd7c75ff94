"""Dense-model outputs computed once per sample set and kept compactly for KL against candidates.

Full-vocabulary log-probabilities of SmolLM2 cost 196 KB per token; we keep the teacher's top-k log-probabilities and
the log of the remaining mass instead. KL is then computed over k + 1 outcomes (the top-k tokens and "everything
else"), which by the data-processing inequality never exceeds the exact KL; `benchmarks/` measures the gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from paretopress.evaluators.forward import TokenOutputs, batched_logits, compact


@dataclass(frozen=True)
class TeacherOutputs:
    """Top-k teacher log-probs [samples, seq, k], their token ids, and log of the remaining mass [samples, seq]."""

    top_logprobs: torch.Tensor
    top_ids: torch.Tensor
    rest_logprob: torch.Tensor

    def rows(self, index: torch.Tensor | slice) -> TeacherOutputs:
        return TeacherOutputs(self.top_logprobs[index], self.top_ids[index], self.rest_logprob[index])

    def to(self, device: str) -> TeacherOutputs:
        return TeacherOutputs(self.top_logprobs.to(device), self.top_ids.to(device), self.rest_logprob.to(device))

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"top_logprobs": self.top_logprobs, "top_ids": self.top_ids, "rest_logprob": self.rest_logprob}


def compute_teacher(model: nn.Module, tokens: torch.Tensor, top_k: int, batch_size: int) -> TeacherOutputs:
    """The dense model's outputs on ``tokens``, computed on the model's device and kept on the CPU (the cache)."""
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for rows, logits in batched_logits(model, tokens, batch_size):
        ids = logits.topk(top_k, dim=-1).indices
        outputs = compact(logits, tokens[rows].to(logits.device), ids)
        parts.append((outputs.top_logprobs.cpu(), ids.to(torch.int32).cpu(), outputs.rest_logprob.cpu()))
    top, ids, rest = (torch.cat(column) for column in zip(*parts, strict=True))
    return TeacherOutputs(top, ids, rest)


def kl_per_token(teacher: TeacherOutputs, student: TokenOutputs) -> torch.Tensor:
    """KL(teacher || student) per token [samples, seq] over the top-k tokens plus the remaining mass.

    ``student`` must be summarised at the teacher's ids (``compact(logits, tokens, teacher.top_ids.long())``).
    """
    top_term = (teacher.top_logprobs.exp() * (teacher.top_logprobs - student.top_logprobs)).sum(-1)
    rest_term = teacher.rest_logprob.exp() * (teacher.rest_logprob - student.rest_logprob)
    return top_term + torch.nan_to_num(rest_term, nan=0.0)
