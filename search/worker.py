"""The evaluation worker: loads the model once, then scores trials. Runs in-process or as a Ray actor."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from paretopress.evaluators.forward import TailSample
from paretopress.evaluators.samples import CALIBRATION, SampleSet
from paretopress.search.stage import StageForward
from paretopress.search.strategies.base import Trial
from paretopress.spaces.base import Space


@dataclass(frozen=True)
class Result:
    values: dict[str, float]
    seconds: float
    worker: str


class Worker:
    """``load`` gives the dense model; it runs once, in the worker's own process (a picklable function).

    With ``tail_samples``, calibration trials (the search's fitness) evaluate the output head only at the teacher's
    ids and estimate the rest of its normaliser from that many sampled vocabulary entries; held-out reports stay
    exact. ``dtype`` is the candidates' arithmetic (the teacher's outputs stay those of the float32 dense model).
    On ``device`` the worker holds the model, its pools and the teacher's outputs; values are summed in float64.
    """

    def __init__(
        self, load: Callable[[], nn.Module], space: Space, pools: dict[str, SampleSet], batch_size: int, threads: int,
        tail_samples: int | None = None, dtype: str = "float32", device: str = "cpu",
    ) -> None:
        torch.set_num_threads(threads)
        # level weights follow the model's dtype and device when applied
        self.model = load().to(device=device, dtype=getattr(torch, dtype))
        self.stage = StageForward(self.model, space)
        self.tail = None if tail_samples is None else TailSample(self.model.config.vocab_size, tail_samples, device)
        self.pools = {name: pool.to(device) for name, pool in pools.items()}
        self.batch_size = batch_size
        self.name = worker_name()

    def evaluate(self, trials: list[Trial]) -> list[Result]:
        """Trials that share samples and evaluators (one stage, or one trial), scored together; each result holds
        an equal share of the time they took."""
        start, first = time.perf_counter(), trials[0]
        if any((t.pool, t.samples, t.evaluators) != (first.pool, first.samples, first.evaluators) for t in trials):
            raise ValueError("trials evaluated together must share their pool, samples and evaluators")
        pool = self.pools[first.pool]
        rows = torch.tensor(first.samples, dtype=torch.long, device=pool.tokens.device)
        values = self.stage.score([t.genome for t in trials], pool.tokens[rows], pool.teacher.rows(rows),
                                  first.evaluators, self.batch_size, self.tail if first.pool == CALIBRATION else None)
        seconds = (time.perf_counter() - start) / len(trials)
        return [Result(v, seconds, self.name) for v in values]


def worker_name() -> str:
    """host:pid, and the Ray node inside an actor: nodes may share a host, and the store should say which ran what."""
    import ray  # imported here: a local worker does not need Ray

    name = f"{socket.gethostname()}:{os.getpid()}"
    return f"{name}@{ray.get_runtime_context().get_node_id()[:12]}" if ray.is_initialized() else name
