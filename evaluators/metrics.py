"""Evaluators: how a materialised candidate is scored. They do not know whether they run locally or on Ray."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn

from paretopress.evaluators.forward import TokenOutputs, batched_logits, compact
from paretopress.evaluators.teacher import TeacherOutputs, kl_per_token
from paretopress.kernel.params import count_nonzero_parameters


class TokenMetric(ABC):
    """A metric accumulated over tokens from one shared forward pass."""

    name: str

    @abstractmethod
    def batch_total(self, student: TokenOutputs, teacher: TeacherOutputs) -> tuple[float, int]:
        """Sum of the per-token values of one batch, and how many tokens it covered."""

    def finish(self, mean: float) -> float:
        return mean


class KL(TokenMetric):
    """KL(dense || candidate) per token: EvoPress' fitness."""

    name = "kl"

    def batch_total(self, student, teacher):
        kl = kl_per_token(teacher, student)
        return float(kl.double().sum()), kl.numel()


class Perplexity(TokenMetric):
    """exp of the mean next-token negative log-likelihood."""

    name = "ppl"

    def batch_total(self, student, teacher):
        nll = -student.next_logprobs
        return float(nll.double().sum()), nll.numel()

    def finish(self, mean: float) -> float:
        return math.exp(mean)


TOKEN_METRICS: dict[str, type[TokenMetric]] = {m.name: m for m in (KL, Perplexity)}
SIZE_METRICS = ("params",)
EVALUATORS = (*TOKEN_METRICS, *SIZE_METRICS)


def score(
    model: nn.Module, tokens: torch.Tensor, teacher: TeacherOutputs, names: tuple[str, ...], batch_size: int
) -> dict[str, float]:
    """Score ``model`` on ``tokens`` with every named evaluator, sharing one forward pass."""
    unknown = set(names) - set(EVALUATORS)
    if unknown:
        raise ValueError(f"unknown evaluators: {sorted(unknown)}")
    metrics = [TOKEN_METRICS[n]() for n in names if n in TOKEN_METRICS]
    totals = {m.name: [0.0, 0] for m in metrics}
    if metrics:
        for rows, logits in batched_logits(model, tokens, batch_size):
            batch_teacher = teacher.rows(rows)
            student = compact(logits, tokens[rows], batch_teacher.top_ids.long())
            for metric in metrics:
                total, count = metric.batch_total(student, batch_teacher)
                totals[metric.name][0] += total
                totals[metric.name][1] += count
    values = {m.name: m.finish(totals[m.name][0] / totals[m.name][1]) for m in metrics}
    if "params" in names:
        values["params"] = float(count_nonzero_parameters(model))
    return values
