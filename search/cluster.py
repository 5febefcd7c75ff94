"""Jobs on a Ray cluster through Ray's Job Submission API: submit a job file, list jobs, read their logs.

The submitted job runs ``paretopress run`` on the head node, in a copy of the job file's folder (Ray uploads it as the
job's working directory), so relative data paths keep working. The store is a file on the head node (``--db``,
``~/paretopress.db`` there by default): the controller there is its only writer, as everywhere else.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from paretopress.errors import UserError
from paretopress.job import load_job

UPLOAD_LIMIT = 100 * 2**20  # Ray refuses working directories above 100 MiB; say so before it does
TOKEN_HINT = ("export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<the cluster's token> (or RAY_AUTH_TOKEN_PATH=<a file "
              "holding it>), then run the same command again")


def _client(address: str | None):
    from ray.exceptions import AuthenticationError
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
