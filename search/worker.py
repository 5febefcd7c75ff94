"""The evaluation worker: loads the model once, then scores trials. Runs in-process or as a Ray actor."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from paretopress.evaluators.metrics import score
from paretopress.evaluators.samples import SampleSet
from paretopress.search.strategies.base import Trial
from paretopress.spaces.base import Space


@dataclass(frozen=True)
class Result:
    values: dict[str, float]
    seconds: float
    worker: str


class Worker:
    """``load`` gives the dense model; it runs once, in the worker's own process (a picklable function)."""

    def __init__(
        self, load: Callable[[], nn.Module], space: Space, pools: dict[str, SampleSet], batch_size: int, threads: int
    ) -> None:
        torch.set_num_threads(threads)
        self.model = load()
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
