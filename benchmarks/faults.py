"""Fault injection: how many faults a study survives, and whether any evaluation is lost or stored twice.

Every run is the tiny study of the tests (a random 6-layer Llama, 4 generations) with faults injected, compared with an
uninterrupted run of the same job:

- ``controller SIGKILL``: ``paretopress run --executor local`` killed twice (after a and then b stored evaluations,
  the points spread over the whole study, held-out report included), then run again to completion;
- ``evaluator actor kill``: a study on a local Ray instance with 2 evaluator actors, one actor killed (``ray.kill``)
  after every few results while other trials are in flight;
- ``worker node kill``: a head and two worker nodes (``ray start`` processes, token auth on), every process of a
  worker node that runs an evaluator SIGKILLed at once mid-study;
- ``signals``: ``paretopress run --executor local`` stopped twice per run by SIGINT, two SIGINTs or SIGTERM (in
  turn), each required to exit 130 / 143, then run again to completion;
- ``concurrent run``: a second ``paretopress run`` of the study started while the first holds it (required to be
  refused with exit 2), then the holder SIGKILLed, and the study taken over by the next run to completion.

A fault is survived when the study completes with exactly the uninterrupted run's candidates, evaluations (values
included) and front. Lost: evaluations of the uninterrupted run missing from the store; duplicated: rows beyond the
first for one (candidate genome, evaluator, pool, sample set).

    .venv/bin/python benchmarks/faults.py [--controller-runs 6] [--actor-runs 3] [--node-runs 2] \
        [--signal-runs 6] [--concurrent-runs 6]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny model, cluster and fault helpers

import ray

from paretopress.cluster import connect_ray
from paretopress.run import run_job
from paretopress.store.store import Store
from tests.support import job_yaml, make_job, make_tiny_model, write, write_text_files
from tests.support.cluster import Cluster
from tests.support.faults import GENERATIONS, evaluation_count, kill_after, snapshot, stop_between_transactions


@dataclass
class Tally:
    kind: str
    runs: int = 0
    injected: int = 0
    survived: int = 0
    lost: int = 0
    duplicated: int = 0
    fronts_equal: int = 0

    def add(self, db: Path, reference: tuple, injected: int) -> None:
        """Count one finished run against the uninterrupted one."""
        keys = stored_keys(db)
        now = snapshot(db)
        self.runs += 1
        self.injected += injected
        self.survived += injected if now == reference else 0
        self.lost += len({row[:4] for row in reference[2]} - set(keys))
        self.duplicated += sum(count - 1 for count in keys.values())
        self.fronts_equal += now[3] == reference[3]


def stored_keys(db: Path) -> Counter:
    """How often each (genome, evaluator, pool, sample set) is stored."""
    with Store(db, readonly=True) as store:
        study = store.study("tiny")
        genome = {c.id: c.genome for c in store.candidates(study.id)}
        return Counter((genome[e.candidate_id], e.evaluator, e.pool, e.sample_key)
                       for e in store.evaluations(study.id))


def controller_kills(runs: int, job: Path, folder: Path, reference: tuple) -> Tally:
    tally, total = Tally("controller SIGKILL (2 per run)"), len(reference[2])
    points = [round(i * total / (2 * runs + 1)) for i in range(1, 2 * runs + 1)]
    for run in range(runs):
        db = folder / f"controller{run}.db"
        command = [sys.executable, "-m", "paretopress.cli", "run", str(job), "--db", str(db), "--executor", "local"]
        injected = sum(kill_after(command, db, max(points[i], 1)) for i in (run, run + runs))
        assert subprocess.run(command, capture_output=True).returncode == 0
        tally.add(db, reference, injected)
    return tally


def spread(total: int, count: int) -> list[int]:
    """``count`` row counts spread over a study of ``total`` evaluations, the first at least 1."""
    return [max(round(i * total / (count + 1)), 1) for i in range(1, count + 1)]


def _run(db: Path, job: Path) -> list[str]:
    return [sys.executable, "-m", "paretopress.cli", "run", str(job), "--db", str(db), "--executor", "local"]


def _started(command: list[str], db: Path, rows: int) -> subprocess.Popen:
    """``command`` running, once the store holds ``rows`` evaluations (or once it ended)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while evaluation_count(db) < rows and process.poll() is None:
        time.sleep(0.001)
    return process


SIGNALS = ((signal.SIGINT,), (signal.SIGINT, signal.SIGINT), (signal.SIGTERM,))


def signal_stops(runs: int, job: Path, folder: Path, reference: tuple) -> Tally:
    tally = Tally("SIGINT, double SIGINT, SIGTERM (2 per run)")
    points = spread(len(reference[2]), 2 * runs)
    for run in range(runs):
        db, injected = folder / f"signal{run}.db", 0
        for turn in (run, run + runs):
            process, signals = _started(_run(db, job), db, points[turn]), SIGNALS[turn % len(SIGNALS)]
            if process.poll() is None:
                for number in signals:
                    process.send_signal(number)
                    time.sleep(0.05)
                assert process.wait() == 128 + signals[0], process.stderr.read()
                injected += 1
            process.wait()
        assert subprocess.run(_run(db, job), capture_output=True).returncode == 0
        tally.add(db, reference, injected)
    return tally


def concurrent_runs(runs: int, job: Path, folder: Path, reference: tuple) -> Tally:
    tally = Tally("concurrent run, then holder SIGKILL (2 per run)")
    points = spread(len(reference[2]), runs)
    for run in range(runs):
        db, injected = folder / f"concurrent{run}.db", 0
        holder = _started(_run(db, job), db, points[run])
        if holder.poll() is None:
            stop_between_transactions(holder, db)  # so that it still holds the study when the second run starts
            second = subprocess.run(_run(db, job), capture_output=True, text=True)
            assert second.returncode == 2 and "is being run by pid" in second.stderr, second.stderr
            holder.send_signal(signal.SIGKILL)
            injected += 2
        holder.wait()
        assert subprocess.run(_run(db, job), capture_output=True).returncode == 0  # its holder is dead: taken over
        tally.add(db, reference, injected)
    return tally


class KillActorEvery:
    """Kills one evaluator actor (alternating) after every ``every`` results, while the others have trials in flight."""

    def __init__(self, every: int) -> None:
        self.every, self.seen, self.killed = every, 0, 0

    def wrap(self, executor) -> KillActorEvery:
        """Interpose on the study's executor (``run_job(wrap_executor=...)``)."""
        self.executor = executor
        return self

    def run(self, trials):
        for index, result in self.executor.run(trials):
            self.seen += 1
            if self.seen % self.every == 0:
                ray.kill(self.executor.actors[self.killed % len(self.executor.actors)], no_restart=True)
                self.killed += 1
            yield index, result

    def close(self):
        self.executor.close()


def actor_kills(runs: int, tiny_model: Path, text_files: list[Path], folder: Path, reference: tuple) -> Tally:
    tally = Tally("evaluator actor kill")
    connect_ray(None, num_cpus=2)
    for run in range(runs):
        killer, db = KillActorEvery(every=5 + 2 * run), folder / f"actor{run}.db"
        run_job(make_job(tiny_model, text_files, **GENERATIONS), db, wrap_executor=killer.wrap)
        tally.add(db, reference, killer.killed)
    ray.shutdown()
    return tally


def node_kills(runs: int, job: Path, folder: Path, reference: tuple) -> Tally:
    tally = Tally("worker node kill")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(folder)}
    env.pop("RAY_ADDRESS", None)
    for run in range(runs):
        cluster = Cluster(folder, env)
        try:
            db = folder / f"node{run}.db"
            tally.add(db, reference, kill_a_node_mid_study(cluster, job, db))
        finally:
            cluster.stop()
    return tally


def kill_a_node_mid_study(cluster: Cluster, job: Path, db: Path) -> int:
    """Run the job across the cluster, kill a worker node with an evaluator once the store has rows; faults injected."""
    run = subprocess.Popen([sys.executable, "-m", "paretopress.cli", "run", str(job), "--db", str(db), "--address",
                            f"127.0.0.1:{cluster.port}"], env=cluster.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    victim = None
    while victim is None and run.poll() is None:
        if evaluation_count(db):
            victim = next((name for name in ("worker1", "worker2") if cluster.runs_an_evaluator(name)), None)
        time.sleep(0.05)
    if victim is not None:
        cluster.kill(victim)
    assert run.wait() == 0
    return int(victim is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--controller-runs", type=int, default=6)
    parser.add_argument("--actor-runs", type=int, default=3)
    parser.add_argument("--node-runs", type=int, default=2)
    parser.add_argument("--signal-runs", type=int, default=6)
    parser.add_argument("--concurrent-runs", type=int, default=6)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="paretopress-faults-") as scratch:
        folder = Path(scratch)
        os.environ["PARETOPRESS_CACHE"] = str(folder / "cache")
        for name in ("text", "tiny-llama"):
            (folder / name).mkdir()
        text_files = write_text_files(folder / "text")
        tiny_model = make_tiny_model(folder / "tiny-llama", text_files)
        job = write(folder / "job.yaml", job_yaml(tiny_model, text_files, **GENERATIONS))
        run_job(make_job(tiny_model, text_files, **GENERATIONS), folder / "straight.db", executor="local")
        reference = snapshot(folder / "straight.db")
        tallies = [controller_kills(args.controller_runs, job, folder, reference),
                   actor_kills(args.actor_runs, tiny_model, text_files, folder, reference),
                   signal_stops(args.signal_runs, job, folder, reference),
                   concurrent_runs(args.concurrent_runs, job, folder, reference)]
        if args.node_runs:
            tallies.append(node_kills(args.node_runs, job, folder, reference))
    print(f"uninterrupted study: {len(reference[1])} candidates, {len(reference[2])} evaluations, "
          f"front of {len(reference[3])}; all runs took {time.perf_counter() - start:.0f} s\n")
    print("| fault | runs | faults injected | faults survived | evaluations lost | evaluations duplicated "
          "| front equal to uninterrupted |")
    print("|---|---|---|---|---|---|---|")
    for t in [*tallies, total(tallies)]:
        print(f"| {t.kind} | {t.runs} | {t.injected} | {t.survived} | {t.lost} | {t.duplicated} | "
              f"{t.fronts_equal}/{t.runs} |")


def total(tallies: list[Tally]) -> Tally:
    return Tally("all", *(sum(getattr(t, field) for t in tallies)
                          for field in ("runs", "injected", "survived", "lost", "duplicated", "fronts_equal")))


if __name__ == "__main__":
    main()
