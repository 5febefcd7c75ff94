"""Executors run trials on workers: a pool of Ray actors, or one worker in this process.

Trials that share samples and evaluators (a selection stage) go to workers as jobs of several trials, so a worker
shares their common prefixes (``search/stage.py``); both executors yield (index, result) as jobs finish, so the
controller stores each result the moment it exists.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any, Protocol

import ray
from ray.exceptions import RayActorError

from paretopress.search.stage import stage_jobs
from paretopress.search.strategies.base import Trial
from paretopress.search.worker import Result, Worker

log = logging.getLogger(__name__)

#: Environment passed to every actor so it finds the same caches as the controller.
FORWARDED_ENV = ("PARETOPRESS_CACHE", "HF_HOME", "HF_HUB_OFFLINE")


class Executor(Protocol):
    def run(self, trials: list[Trial]) -> Iterator[tuple[int, Result]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """One worker in this process: for notebooks, debugging and single-machine runs without Ray."""

    def __init__(self, **worker_args: Any) -> None:
        self.worker = Worker(**worker_args)
        self.space = worker_args["space"]

    def run(self, trials: list[Trial]) -> Iterator[tuple[int, Result]]:
        for job in stage_jobs(trials, self.space, parts=1):
            yield from zip(job, self.worker.evaluate([trials[i] for i in job]), strict=True)

    def close(self) -> None:
        pass


class RayExecutor:
    """A pool of evaluator actors, each holding the model once; at most one job in flight per actor.

    On ``device: cuda`` each actor asks Ray for ``gpus_per_worker`` GPUs, so a cluster spreads them over its GPUs
    (Ray sets each actor's visible devices, so ``cuda`` is the GPU it was given).

    Sample pools and teacher outputs travel once through the object store, so nodes need no shared disk. A job
    whose actor dies is given to a fresh actor.
    """

    def __init__(self, workers: int, threads_per_worker: int, gpus_per_worker: float = 0, **worker_args: Any
                 ) -> None:
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        self._remote = ray.remote(Worker).options(
            num_cpus=threads_per_worker, num_gpus=gpus_per_worker, runtime_env={"env_vars": env}, max_concurrency=1
        )
        self._args = {k: ray.put(v) if k == "pools" else v for k, v in worker_args.items()}
        self._args["threads"] = threads_per_worker
        self.space = worker_args["space"]
        self.actors = [self._spawn() for _ in range(workers)]

    def _spawn(self):
        return self._remote.remote(**self._args)

    def run(self, trials: list[Trial]) -> Iterator[tuple[int, Result]]:
        queue = stage_jobs(trials, self.space, parts=len(self.actors))
        idle = list(self.actors)
        in_flight: dict[ray.ObjectRef, tuple[list[int], Any]] = {}
        while queue or in_flight:
            while queue and idle:
                job, actor = queue.pop(0), idle.pop(0)
                in_flight[actor.evaluate.remote([trials[i] for i in job])] = (job, actor)
            [done], _ = ray.wait(list(in_flight), num_returns=1)
            job, actor = in_flight.pop(done)
            try:
                results = ray.get(done)
            except RayActorError:
                log.warning("an evaluator actor died; its %d trial(s) go to a fresh actor", len(job))
                self.actors[self.actors.index(actor)] = actor = self._spawn()
                queue.insert(0, job)
                idle.append(actor)
                continue
            idle.append(actor)
            yield from zip(job, results, strict=True)

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
