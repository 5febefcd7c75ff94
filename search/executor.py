"""Executors run trials on workers: a pool of Ray actors, or one worker in this process.

Both yield (index, result) as evaluations finish, so the controller stores each one the moment it exists.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any, Protocol

import ray
from ray.exceptions import RayActorError

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

    def run(self, trials: list[Trial]) -> Iterator[tuple[int, Result]]:
        for index, trial in enumerate(trials):
            yield index, self.worker.evaluate(trial)

    def close(self) -> None:
        pass


class RayExecutor:
    """A pool of evaluator actors, each holding the model once; at most one trial in flight per actor.

    Sample pools and teacher outputs travel once through the object store, so nodes need no shared disk. A trial
    whose actor dies is given to a fresh actor.
    """

    def __init__(self, workers: int, threads_per_worker: int, **worker_args: Any) -> None:
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        self._remote = ray.remote(Worker).options(
            num_cpus=threads_per_worker, runtime_env={"env_vars": env}, max_concurrency=1
        )
        self._args = {k: ray.put(v) if k == "pools" else v for k, v in worker_args.items()}
        self._args["threads"] = threads_per_worker
        self.actors = [self._spawn() for _ in range(workers)]

    def _spawn(self):
        return self._remote.remote(**self._args)

    def run(self, trials: list[Trial]) -> Iterator[tuple[int, Result]]:
        queue = list(range(len(trials)))
        idle = list(self.actors)
        in_flight: dict[ray.ObjectRef, tuple[int, Any]] = {}
        while queue or in_flight:
            while queue and idle:
                index, actor = queue.pop(0), idle.pop(0)
                in_flight[actor.evaluate.remote(trials[index])] = (index, actor)
            [done], _ = ray.wait(list(in_flight), num_returns=1)
            index, actor = in_flight.pop(done)
            try:
                result = ray.get(done)
            except RayActorError:
                log.warning("an evaluator actor died; trial %d goes to a fresh actor", index)
                self.actors[self.actors.index(actor)] = actor = self._spawn()
                queue.insert(0, index)
                idle.append(actor)
                continue
            idle.append(actor)
            yield index, result

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
