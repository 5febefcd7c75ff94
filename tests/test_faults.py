"""Faults a long job meets: a controller killed with SIGKILL, an evaluator actor killed mid-evaluation."""

import subprocess
import sys

import pytest
import ray
from sqlalchemy import text

from paretopress.run import run_job
from paretopress.store.store import Store
from tests.support import job_yaml, make_job, write
from tests.support.faults import GENERATIONS, evaluation_count, kill_after, snapshot


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


def test_a_prescreened_search_resumes_to_the_uninterrupted_study(uninterrupted, tiny_model, text_files, tmp_path):
    """The surrogate is refitted from the values the store answers on resume, so it ranks the same offspring."""
    changes = {**GENERATIONS, "strategy.prescreen": 3}
    straight = tmp_path / "straight.db"
    run_job(make_job(tiny_model, text_files, **changes), straight, executor="local")
    job, db = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files, **changes)), tmp_path / "s.db"
    command = [sys.executable, "-m", "paretopress.cli", "run", str(job), "--db", str(db), "--executor", "local"]
    assert kill_after(command, db, len(snapshot(straight)[2]) // 2)
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert snapshot(db) == snapshot(straight)
    assert snapshot(db)[1] != uninterrupted[1]  # the surrogate chose other offspring than plain EvoPress
