"""``paretopress doctor``: is a store sound? SQLite's own checks plus the references SQLite does not enforce alone."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from paretopress.search.store import Store

#: (what is wrong, query counting the rows it applies to)
ORPHANS = (
    ("evaluations of candidates that do not exist",
     "SELECT count(*) FROM evaluations WHERE candidate_id NOT IN (SELECT id FROM candidates)"),
    ("candidates of studies that do not exist",
     "SELECT count(*) FROM candidates WHERE study_id NOT IN (SELECT id FROM studies)"),
    ("candidates whose parent does not exist",
     "SELECT count(*) FROM candidates WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT id FROM candidates)"),
    ("hypervolumes of studies that do not exist",
     "SELECT count(*) FROM hypervolumes WHERE study_id NOT IN (SELECT id FROM studies)"),
    ("candidates without any evaluation",
     "SELECT count(*) FROM candidates WHERE id NOT IN (SELECT candidate_id FROM evaluations)"),
)
COUNTS = ("studies", "candidates", "evaluations")


@dataclass(frozen=True)
class Diagnosis:
    counts: dict[str, int]
    problems: list[str]
    unfinished: list[str]


def diagnose(path: str) -> Diagnosis:
    """Read-only: never repairs, so running it on a store a job is writing is safe."""
    with Store(path, readonly=True) as store, store.engine.connect() as connection:
        problems = [f"integrity: {row[0]}" for row in connection.execute(text("PRAGMA integrity_check"))
                    if row[0] != "ok"]
        for what, query in ORPHANS:
            count = connection.execute(text(query)).scalar_one()
            if count:
                problems.append(f"{count} {what}")
        counts = {table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() for table in COUNTS}
        unfinished = [f"{s.name} ({s.status})" for s in store.studies() if s.status != "completed"]
    return Diagnosis(counts, problems, unfinished)
