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


class Tally:
    """One candidate's per-token metric totals, added batch by batch from its logits; then its values.

    ``score`` runs the forward passes itself; a stage's evaluation (``search/stage.py``) computes the logits of
    several candidates with shared prefixes and adds each candidate's batches to its own tally.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        unknown = set(names) - set(EVALUATORS)
        if unknown:
            raise ValueError(f"unknown evaluators: {sorted(unknown)}")
        self.names = names
        self.metrics = [TOKEN_METRICS[n]() for n in names if n in TOKEN_METRICS]
        self.totals = {m.name: [0.0, 0] for m in self.metrics}

    @property
    def needs_logits(self) -> bool:
        return bool(self.metrics)

    @property
    def counts_parameters(self) -> bool:
        return "params" in self.names

    def add(self, logits: torch.Tensor, tokens: torch.Tensor, teacher: TeacherOutputs) -> None:
        """One batch: float32 logits [rows, seq, vocab] (overwritten), its tokens and the teacher's outputs."""
        self.add_outputs(compact(logits, tokens, teacher.top_ids.long()), teacher)

    def add_outputs(self, student: TokenOutputs, teacher: TeacherOutputs) -> None:
        """One batch, already summarised at the teacher's ids (``compact`` or ``estimated``)."""
        for metric in self.metrics:
            total, count = metric.batch_total(student, teacher)
            self.totals[metric.name][0] += total
            self.totals[metric.name][1] += count

    def values(self, model: nn.Module) -> dict[str, float]:
        """The metrics' values; ``params`` is counted on ``model``, the candidate as materialised."""
        values = {m.name: m.finish(self.totals[m.name][0] / self.totals[m.name][1]) for m in self.metrics}
        if self.counts_parameters:
            values["params"] = float(count_nonzero_parameters(model))
        return values


def score(
    model: nn.Module, tokens: torch.Tensor, teacher: TeacherOutputs, names: tuple[str, ...], batch_size: int
) -> dict[str, float]:
    """Score ``model`` on ``tokens`` with every named evaluator, sharing one forward pass."""
    tally = Tally(names)
    if tally.needs_logits:
        for rows, logits in batched_logits(model, tokens, batch_size):
            tally.add(logits, tokens[rows], teacher.rows(rows))
    return tally.values(model)
