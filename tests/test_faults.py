"""Faults a long job meets: a controller killed with SIGKILL, an evaluator actor killed mid-evaluation."""

import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import ray
from sqlalchemy import text

from paretopress.search.front import study_front
from paretopress.search.runner import run_job
from paretopress.search.store import Store
from tests.test_cli import job_yaml, write
from tests.test_runner import make_job

GENERATIONS = {"strategy.generations": 4}


def evaluation_count(db) -> int:
    """Rows in the store's evaluations table, read with plain sqlite3: well under a millisecond, because on the tiny
    model a row lands every few milliseconds and a slow poll would kill the controller later than asked."""
    if not db.exists():
        return 0
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT count(*) FROM evaluations").fetchone()[0]
    except sqlite3.Error:  # the file exists but the schema is not written yet
        return 0
    finally:
        connection.close()


def kill_after(command: list[str], db, evaluations: int) -> bool:
    """Start ``command`` and SIGKILL it once the store holds ``evaluations`` rows: no chance to clean up.

    Returns whether the process was still running when killed.
    """
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while evaluation_count(db) < evaluations and process.poll() is None:
        time.sleep(0.001)
    alive = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return alive


def snapshot(db) -> tuple:
    """The study's status and contents, independent of the order results arrived in (ids follow that order)."""
    with Store(db, readonly=True) as store:
        study = store.study("tiny")
        genome = {c.id: c.genome for c in store.candidates(study.id)}
        candidates = sorted((c.genome, c.origin, c.generation or -1) for c in store.candidates(study.id))
        evaluations = sorted((genome[e.candidate_id], e.evaluator, e.pool, e.sample_key, e.value)
                             for e in store.evaluations(study.id))
        front = [{**row, "candidate": genome[row["candidate"]]} for row in study_front(store, study.id)]
        return study.status, candidates, evaluations, front


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, text_files, tmp_path_factory):
    db = tmp_path_factory.mktemp("straight") / "s.db"
    run_job(make_job(tiny_model, text_files, **GENERATIONS), db, executor="local")
    return snapshot(db)


@pytest.mark.parametrize("rows_left", [-1, 14, 4])  # after the first row, mid-search, during the held-out report
def test_controller_killed_then_rerun_equals_uninterrupted(rows_left, uninterrupted, tiny_model, text_files,
                                                           tmp_path):
    job, db = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files, **GENERATIONS)), tmp_path / "s.db"
    command = [sys.executable, "-m", "paretopress.cli", "run", str(job), "--db", str(db), "--executor", "local"]
    total = len(uninterrupted[2])
    assert kill_after(command, db, 1 if rows_left < 0 else total - rows_left)
    assert evaluation_count(db) < total or rows_left == 4  # the last point may race the end of the report
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert snapshot(db) == ("completed", *uninterrupted[1:])
    with Store(db) as store:  # the store is sound after the kill
        assert store.engine.connect().execute(text("PRAGMA integrity_check")).scalar_one() == "ok"


class KillOneActor:
    """Kills one evaluator actor while its evaluation is in flight, once, then lets the executor go on."""

    def __init__(self, executor) -> None:
        self.executor, self.killed = executor, 0

    def run(self, trials):
        for index, result in self.executor.run(trials):
            if not self.killed and len(trials) > 1:
                victim = next(a for a in self.executor.actors if a is not None)
                ray.kill(victim, no_restart=True)
                self.killed += 1
            yield index, result

    def close(self):
        self.executor.close()


def test_killed_actor_is_replaced_and_nothing_is_lost(ray_cluster, uninterrupted, tiny_model, text_files, tmp_path):
    faults: list[KillOneActor] = []

    def wrap(executor):
        faults.append(KillOneActor(executor))
        return faults[-1]

    run_job(make_job(tiny_model, text_files, **GENERATIONS), tmp_path / "s.db", wrap_executor=wrap)
    assert faults[0].killed == 1
    status, candidates, evaluations, front = snapshot(tmp_path / "s.db")
    assert status == "completed"
    assert (candidates, evaluations, front) == uninterrupted[1:]  # no evaluation lost, none duplicated
