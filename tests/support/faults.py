"""Fault helpers shared by the fault tests and benchmarks/faults.py: kill a run mid-study, compare what it stored."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time

from paretopress.report.front import study_front
from paretopress.store.store import Store

GENERATIONS = {"strategy.generations": 4}  # long enough to interrupt a tiny study in the middle


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


def stop_between_transactions(process: subprocess.Popen, db) -> None:
    """SIGSTOP the run at a moment it holds no SQLite write lock: a holder stopped inside a transaction would make
    every other run wait on SQLite's lock rather than meet the lease."""
    while True:
        process.send_signal(signal.SIGSTOP)
        probe = sqlite3.connect(db, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return
        except sqlite3.OperationalError:  # stopped mid-write: let it finish the transaction and try again
            process.send_signal(signal.SIGCONT)
            time.sleep(0.005)
        finally:
            probe.close()
