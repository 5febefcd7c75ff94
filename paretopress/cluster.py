"""Ray clusters: joining one (or starting a private local instance), and jobs through Ray's Job Submission API
(submit a job file, list jobs, read their logs).

The submitted job runs ``paretopress run`` on the head node, in a copy of the job file's folder (Ray uploads it as the
job's working directory), so relative data paths keep working. The store is a file on the head node (``--db``,
``~/paretopress.db`` there by default): the controller there is its only writer, as everywhere else.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
from pathlib import Path

import ray
from ray._private import ray_constants
from ray.exceptions import AuthenticationError

from paretopress.job import load_job
from paretopress.kernel.errors import UserError
from paretopress.signals import kept_handler

UPLOAD_LIMIT = 100 * 2**20  # Ray refuses working directories above 100 MiB; say so before it does
TOKEN_HINT = ("export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<the cluster's token> (or RAY_AUTH_TOKEN_PATH=<a file "
              "holding it>), then run the same command again")


def connect_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Start a private local Ray instance or join the cluster at ``address``.

    The local instance listens on loopback only, has no dashboard and no token auth, and is always a new one:
    ``address="local"`` keeps Ray from joining whatever cluster ``ray start`` left running on this machine.
    On a cluster with token authentication, export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)
    before running paretopress; Ray reads them from the environment.
    """
    address = address or os.environ.get("RAY_ADDRESS")  # set for jobs submitted to a cluster
    if address:
        check_reachable(address)  # a bad address is refused even in a process already connected
    if ray.is_initialized():
        return
    with kept_handler(signal.SIGTERM):  # ray.init makes SIGTERM exit at once, skipping our clean-up
        if address:
            try:
                ray.init(address=address, logging_level=logging.WARNING)
            except (ConnectionError, AuthenticationError) as error:  # after 20 s of retries, or at once: no token
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
        with socket.create_connection((host, int(port)), timeout=timeout) as connection:
            grpc = _speaks_grpc(connection)
    except OSError as error:
        raise UserError(f"cannot reach a Ray cluster at {address}: {error.strerror or error}") from error
    if not grpc:
        raise UserError(f"the server at {address} is not a Ray cluster (it does not answer as Ray's GCS, a gRPC "
                        f"server, does); give the head node's GCS port, 6379 by default")


#: an HTTP/2 client's connection preface, then an empty SETTINGS frame: a gRPC server answers with its SETTINGS
HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS_FRAME = 4


def _speaks_grpc(connection: socket.socket) -> bool:
    """Whether the server behind ``connection`` answers the HTTP/2 preface with a frame header naming SETTINGS:
    what Ray's GCS does at once, and what a web server, a database or a closed-mouthed service does not."""
    connection.sendall(HTTP2_HELLO)
    header = b""
    try:
        while len(header) < 9 and (chunk := connection.recv(9 - len(header))):
            header += chunk
    except TimeoutError:
        return False
    return len(header) == 9 and header[3] == SETTINGS_FRAME


def _loopback_only() -> None:
    """Make a private instance listen on 127.0.0.1: Ray otherwise binds its servers to every interface, which,
    with token auth off, would open this machine's Ray to its network. Ray keeps loopback for single-machine
    instances on macOS and Windows; this asks for the same here (the constant for this process, whose ray is
    already imported, and the environment variable for the processes it starts)."""
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    where = address or "$RAY_API_SERVER_ADDRESS / $RAY_ADDRESS"
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as error:  # the client checks the server's version first, with our token if any
        raise UserError(f"the Ray job server at {where} refused us ({str(error).splitlines()[0]}): "
                        f"{TOKEN_HINT}") from error
    except Exception as error:  # Ray raises ConnectionError, ValueError or RuntimeError depending on the cause
        raise UserError(f"cannot reach the Ray job server at {where}: {str(error).splitlines()[0]}") from error


def submit(job_file: str | Path, address: str | None, db: str) -> str:
    """Validate the job here (bad input never reaches the cluster), then submit it; returns the job id."""
    job_file = Path(job_file)
    load_job(job_file)
    folder = job_file.resolve().parent
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    if size > UPLOAD_LIMIT:
        raise UserError(f"{folder} holds {size / 2**20:.0f} MiB; Ray uploads at most 100 MiB as the job's folder: "
                        "put the job file in a folder of its own")
    entrypoint = shlex.join(["paretopress", "run", job_file.name, "--db", db])
    return _client(address).submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(folder)})


def jobs(address: str | None) -> list[tuple[str, str, str]]:
    """(id, status, entrypoint) of every job the cluster knows, oldest first."""
    listed = sorted(_client(address).list_jobs(), key=lambda job: job.start_time or 0)
    return [(job.submission_id or job.job_id or "", str(job.status.value), job.entrypoint) for job in listed]


def logs(address: str | None, job_id: str) -> str:
    client = _client(address)
    try:
        return client.get_job_logs(job_id)
    except RuntimeError as error:
        raise UserError(f"no job {job_id!r} on the cluster at {address}: {str(error).splitlines()[0]}") from error
