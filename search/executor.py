"""Executors run trials on workers: a pool of Ray actors, or one worker in this process.

Both yield (index, result) as evaluations finish, so the controller stores each one the moment it exists.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from typing import Any, Protocol

import ray
from ray._private import ray_constants
from ray.exceptions import AuthenticationError, RayActorError

from paretopress.errors import UserError
from paretopress.search.cluster import TOKEN_HINT
from paretopress.search.strategy import Trial
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


def connect_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Start a private local Ray instance or join the cluster at ``address``.

    The local instance listens on loopback only, has no dashboard and no token auth, and is always a new one:
    ``address="local"`` keeps Ray from joining whatever cluster ``ray start`` left running on this machine.
    On a cluster with token authentication, export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)
    before running paretopress; Ray reads them from the environment.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")  # set for jobs submitted to a cluster
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, AuthenticationError) as error:  # after 20 s of retries, or at once without a token
            raise UserError(_join_error(address, error)) from error
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        _loopback_only()
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)


def _join_error(address: str, error: BaseException) -> str:
    """One line for a failed ``ray.init``: Ray chains the cause of a refused token as an exception or as its text."""
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    if any(isinstance(e, AuthenticationError) or "AuthenticationError" in str(e) for e in chain):
        return f"the Ray cluster at {address} refused us (a missing or wrong token): {TOKEN_HINT}"
    return f"cannot join the Ray cluster at {address}: {str(chain[0]).splitlines()[0]}"


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds with one line on a mistyped or unreachable address: ``ray.init`` retries for minutes.

    ``auto`` (Ray finds a cluster started on this machine) and ``ray://`` client addresses are left to Ray.
    """
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address {address!r} is not HOST:PORT (the head node's GCS port, 6379 by default) or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise UserError(f"cannot reach a Ray cluster at {address}: {error.strerror or error}") from error


def _loopback_only() -> None:
    """Make a private instance listen on 127.0.0.1: Ray otherwise binds its servers to every interface, which,
    with token auth off, would open this machine's Ray to its network. Ray keeps loopback for single-machine
    instances on macOS and Windows; this asks for the same here (the constant for this process, whose ray is
    already imported, and the environment variable for the processes it starts)."""
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


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
