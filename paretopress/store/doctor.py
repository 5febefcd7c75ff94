"""``paretopress doctor``: is a store sound? SQLite's own checks plus the references SQLite does not enforce alone."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import inspect, text

from paretopress.store.store import Store
from paretopress.store.tables import Base

#: (tables the check reads, what is wrong, query counting the rows it applies to)
ORPHANS = (
    (("evaluations",), "evaluations of candidates that do not exist",
     "SELECT count(*) FROM evaluations WHERE candidate_id NOT IN (SELECT id FROM candidates)"),
    (("candidates",), "candidates of studies that do not exist",
     "SELECT count(*) FROM candidates WHERE study_id NOT IN (SELECT id FROM studies)"),
    (("candidates",), "candidates whose parent does not exist",
     "SELECT count(*) FROM candidates WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT id FROM candidates)"),
    (("hypervolumes",), "hypervolumes of studies that do not exist",
     "SELECT count(*) FROM hypervolumes WHERE study_id NOT IN (SELECT id FROM studies)"),
    (("baseline_runs",), "baseline runs whose candidate does not exist",
     "SELECT count(*) FROM baseline_runs WHERE candidate_id NOT IN (SELECT id FROM candidates)"),
    # a baseline's genome is stored before its held-out report, so an interrupted study may hold some unscored
    (("candidates", "baseline_runs"), "candidates without any evaluation (baseline genomes aside)",
     "SELECT count(*) FROM candidates WHERE id NOT IN (SELECT candidate_id FROM evaluations) "
     "AND id NOT IN (SELECT candidate_id FROM baseline_runs)"),
)
COUNTS = ("studies", "candidates", "evaluations")


@dataclass(frozen=True)
class Diagnosis:
    counts: dict[str, int]
    problems: list[str]
    unfinished: list[str]
    missing_tables: list[str]  # added to the schema since the store was written; the next job to write creates them


def diagnose(path: str) -> Diagnosis:
    """Read-only: never repairs, so running it on a store a job is writing is safe."""
    with Store(path, readonly=True) as store, store.engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        problems = [f"integrity: {row[0]}" for row in connection.execute(text("PRAGMA integrity_check"))
                    if row[0] != "ok"]
        for needs, what, query in ORPHANS:
            count = connection.execute(text(query)).scalar_one() if tables.issuperset(needs) else 0
            if count:
                problems.append(f"{count} {what}")
        counts = {table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() for table in COUNTS}
        unfinished = [f"{s.name} ({s.status})" for s in store.studies() if s.status != "completed"]
    return Diagnosis(counts, problems, unfinished, sorted(set(Base.metadata.tables) - tables))
