"""The evaluation worker: loads the model once, then scores trials. Runs in-process or as a Ray actor."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import torch

from paretopress.evaluators.metrics import score
from paretopress.evaluators.teacher import TeacherOutputs
from paretopress.search.models import load_model, quiet_transformers
from paretopress.search.strategy import Trial
from paretopress.spaces.base import Space


@dataclass(frozen=True)
class Result:
    values: dict[str, float]
    seconds: float
    worker: str


@dataclass(frozen=True)
class SampleSet:
    """A pool of token samples [samples, seq] and the dense model's outputs on them."""

    tokens: torch.Tensor
    teacher: TeacherOutputs


class Worker:
    def __init__(
        self, model: str, space: Space, pools: dict[str, SampleSet], batch_size: int, threads: int
    ) -> None:
        torch.set_num_threads(threads)
        quiet_transformers()
        self.model = load_model(model)
        self.space = space
        self.pools = pools
        self.batch_size = batch_size
        self.name = worker_name()

    def evaluate(self, trial: Trial) -> Result:
        start = time.perf_counter()
        pool = self.pools[trial.pool]
        rows = torch.tensor(trial.samples, dtype=torch.long)
        with self.space.applied(self.model, trial.genome) as model:
            values = score(model, pool.tokens[rows], pool.teacher.rows(rows), trial.evaluators, self.batch_size)
        return Result(values, time.perf_counter() - start, self.name)


def worker_name() -> str:
    """host:pid, and the Ray node inside an actor: nodes may share a host, and the store should say which ran what."""
    import ray  # imported here: a local worker does not need Ray

    name = f"{socket.gethostname()}:{os.getpid()}"
    return f"{name}@{ray.get_runtime_context().get_node_id()[:12]}" if ray.is_initialized() else name
