"""The store: every study, candidate and evaluation in one SQLite file (SQLAlchemy 2.x, WAL mode).

The controller is the only writer; Ray workers return results and never open the database. Readers (CLI, notebooks)
open it read-only and may read while a job writes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, select
from sqlalchemy.orm import Session

from paretopress.kernel.errors import UserError
from paretopress.signals import deferred
from paretopress.spaces.genome import Genome
from paretopress.store.files import (
    check_writable,
    create_store_file,
    read_only_connection,
    read_only_engine,
    store_path,
    writer_engine,
)
from paretopress.store.lease import release_lease, take_lease
from paretopress.store.tables import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Base,
    BaselineRun,
    Candidate,
    Evaluation,
    Hypervolume,
    Latency,
    Meta,
    Study,
    now,
)


def sample_key(samples: Iterable[int]) -> str:
    """Canonical text of a sample set: the unique key of an evaluation together with candidate and evaluator."""
    return ",".join(str(i) for i in sorted(samples))


def spec_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested spec dicts, for a resume refusal message; a key one side
    leaves out (a setting at the default that studies stored before it existed had) reads as its default."""
    changed = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key, _DEFAULT), new.get(key, _DEFAULT)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += spec_differences(a, b, f"{path}.")
        elif a != b:
            changed.append(f"{path}: {_shown(a)} -> {_shown(b)}")
    return changed


_DEFAULT = object()


def _shown(value: object) -> str:
    return "the default" if value is _DEFAULT else json.dumps(value)


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class Store:
    """Typed access to one SQLite file. ``readonly`` stores never create or change the file."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = store_path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.exists():
                raise UserError(f"no store at {self.path}")
            if (version := check_schema(self.path)) != SCHEMA_VERSION:
                raise UserError(f"{self.path} has store schema version {version}; run a job on it with this "
                                f"paretopress (`paretopress run`) to migrate it to version {SCHEMA_VERSION}")
            self.engine = read_only_engine(self.path)
        else:
            check_writable(self.path)
            if self.path.exists() and self.path.stat().st_size > 0:
                self._migrate(check_schema(self.path))  # before any other write: a refused file stays untouched
            else:
                create_store_file(self.path, _create)
            self.engine = writer_engine(self.path)
        event.listen(self.engine, "connect", self._configure_connection)
        if not readonly:
            Base.metadata.create_all(self.engine)  # tables added since the file was written; none on a new store

    def _migrate(self, version: int) -> None:
        """Run MIGRATIONS from ``version`` up to SCHEMA_VERSION, each step atomic with its version number."""
        for old in range(version, SCHEMA_VERSION):
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=30)  # explicit BEGIN: DDL too
            try:
                connection.execute("BEGIN IMMEDIATE")
                MIGRATIONS[old](connection)
                connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(old + 1),))
                connection.execute("COMMIT")
            finally:
                connection.close()  # without COMMIT, closing rolls the step back

    def _configure_connection(self, connection: sqlite3.Connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not self.readonly:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """One write transaction, which a signal cannot cut in half: a lock left held would keep the run from
        marking its study interrupted."""
        with deferred(), Session(self.engine) as session, session.begin():
            yield session

    # -- studies ---------------------------------------------------------------------------------------------------

    def open_study(self, name: str, spec: dict, seed: int, space: dict, takeover: bool = False) -> tuple[int, bool]:
        """Create the study, or resume it when the stored spec is identical, and take its lease, all in one
        transaction (a refusal writes nothing); returns (study id, resumed)."""
        digest = spec_hash(spec)
        with self._writing() as session:
            study = session.scalar(select(Study).where(Study.name == name))
            if study is None:
                study = Study(name=name, spec=spec, spec_hash=digest, seed=seed, space=space)
                session.add(study)
                session.flush()
                take_lease(session, study.id, name, takeover)
                return study.id, False
            if study.spec_hash != digest:
                changes = "; ".join(spec_differences(study.spec, spec))
                raise UserError(
                    f"study {name!r} exists with a different spec ({changes}); use another name or the old spec"
                )
            take_lease(session, study.id, name, takeover)
            study.status = "running"
            return study.id, True

    def set_status(self, study_id: int, status: str) -> None:
        """The study's final status, and its lease given up, in one transaction."""
        with self._writing() as session:
            session.get(Study, study_id).status = status
            release_lease(session, study_id)

    def studies(self) -> list[Study]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(select(Study).order_by(Study.id)))

    def study(self, ref: str | int) -> Study:
        """A study by name or numeric id."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(Study).where(Study.name == str(ref))
            study = session.scalar(query)
            if study is None and str(ref).isascii() and str(ref).isdigit():
                study = session.get(Study, int(ref))
        if study is None:
            raise UserError(f"no study {ref!r} in {self.path}")
        return study

    # -- candidates and evaluations ----------------------------------------------------------------------------------

    def lookup(self, study_id: int, genome: Genome, evaluators: Iterable[str], pool: str, samples: Iterable[int]):
        """Stored values of these evaluators for this genome and sample set, or None if any is missing."""
        key = sample_key(samples)
        wanted = tuple(evaluators)
        with Session(self.engine) as session:
            rows = session.execute(
                select(Evaluation.evaluator, Evaluation.value)
                .join(Candidate, Candidate.id == Evaluation.candidate_id)
                .where(
                    Candidate.study_id == study_id,
                    Candidate.genome_key == genome.key,
                    Evaluation.pool == pool,
                    Evaluation.sample_key == key,
                    Evaluation.evaluator.in_(wanted),
                )
            ).all()
        values = dict(rows)
        return values if len(values) == len(wanted) else None

    def record(
        self,
        study_id: int,
        genome: Genome,
        origin: str,
        parent: Genome | None,
        generation: int | None,
        pool: str,
        samples: tuple[int, ...],
        tokens: int,
        values: dict[str, float],
        seconds: float,
        worker: str,
    ) -> int:
        """Write one evaluation (and its candidate, if new) in a single transaction; returns the candidate id."""
        key = sample_key(samples)
        with self._writing() as session:
            candidate = self._candidate(session, study_id, genome, origin, parent, generation)
            existing = set(
                session.scalars(
                    select(Evaluation.evaluator).where(
                        Evaluation.candidate_id == candidate.id, Evaluation.pool == pool, Evaluation.sample_key == key
                    )
                )
            )
            for evaluator, value in values.items():
                if evaluator not in existing:
                    session.add(
                        Evaluation(
                            candidate_id=candidate.id, evaluator=evaluator, pool=pool, sample_key=key,
                            samples=list(samples), tokens=tokens, value=value, seconds=seconds, worker=worker,
                        )
                    )
            return candidate.id

    def _candidate(self, session: Session, study_id: int, genome: Genome, origin: str, parent: Genome | None,
                   generation: int | None) -> Candidate:
        found = self._find(session, study_id, genome)
        if found is not None:
            return found
        parent_row = self._find(session, study_id, parent) if parent is not None else None
        candidate = Candidate(
            study_id=study_id, genome=genome.to_json(), genome_key=genome.key, origin=origin,
            parent_id=parent_row.id if parent_row else None, generation=generation,
        )
        session.add(candidate)
        session.flush()
        return candidate

    @staticmethod
    def _find(session: Session, study_id: int, genome: Genome) -> Candidate | None:
        return session.scalar(
            select(Candidate).where(Candidate.study_id == study_id, Candidate.genome_key == genome.key)
        )

    def candidate_id(self, study_id: int, genome: Genome) -> int | None:
        with Session(self.engine) as session:
            row = self._find(session, study_id, genome)
            return None if row is None else row.id

    def candidates(self, study_id: int) -> list[Candidate]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(select(Candidate).where(Candidate.study_id == study_id).order_by(Candidate.id)))

    def candidate(self, study_id: int, candidate_id: int) -> Candidate:
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(Candidate, candidate_id)
        if row is None or row.study_id != study_id:
            raise UserError(f"study {study_id} has no candidate {candidate_id}")
        return row

    def evaluations(self, study_id: int, pool: str | None = None) -> list[Evaluation]:
        with Session(self.engine, expire_on_commit=False) as session:
            query = (
                select(Evaluation)
                .join(Candidate, Candidate.id == Evaluation.candidate_id)
                .where(Candidate.study_id == study_id)
                .order_by(Evaluation.id)
            )
            if pool is not None:
                query = query.where(Evaluation.pool == pool)
            return list(session.scalars(query))


    def record_hypervolume(self, study_id: int, generation: int, value: float, objectives: list[str],
                           reference: list[float]) -> None:
        """Idempotent: a resumed study replays its generations and finds them recorded."""
        with self._writing() as session:
            found = session.scalar(select(Hypervolume).where(Hypervolume.study_id == study_id,
                                                             Hypervolume.generation == generation))
            if found is None:
                session.add(Hypervolume(study_id=study_id, generation=generation, value=value,
                                        objectives=objectives, reference=reference))

    def hypervolumes(self, study_id: int) -> list[Hypervolume]:
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(Hypervolume).where(Hypervolume.study_id == study_id).order_by(Hypervolume.generation)
            return list(session.scalars(query))

    # -- baselines -----------------------------------------------------------------------------------------------------

    def record_baseline(self, study_id: int, method: str, settings: dict, genomes: dict[str, Genome], seconds: float,
                        passes: int) -> None:
        """The genomes of one baseline run (label -> genome) as candidates, with the run's cost, in one transaction."""
        with self._writing() as session:
            for label, genome in genomes.items():
                candidate = self._candidate(session, study_id, genome, label, None, None)
                session.add(BaselineRun(study_id=study_id, method=method, settings=settings,
                                        settings_hash=spec_hash(settings), label=label, candidate_id=candidate.id,
                                        seconds=seconds, passes=passes))

    def baseline_genomes(self, study_id: int, settings: dict) -> dict[str, Genome]:
        """label -> genome of the stored run of a baseline with exactly these settings (empty if none)."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(BaselineRun.label, Candidate.genome)
                .join(Candidate, Candidate.id == BaselineRun.candidate_id)
                .where(BaselineRun.study_id == study_id, BaselineRun.settings_hash == spec_hash(settings))
                .order_by(BaselineRun.id)
            ).all()
        return {label: Genome.from_json(genome) for label, genome in rows}

    def baseline_runs(self, study_id: int) -> list[BaselineRun]:
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(BaselineRun).where(BaselineRun.study_id == study_id).order_by(BaselineRun.id)
            return list(session.scalars(query))


    # -- latency tables ------------------------------------------------------------------------------------------------

    def latencies(self, device: str, dtype: str, batch: int, seq: int) -> dict[tuple[str, int], float]:
        """(module, level) -> seconds of every row measured on this device, dtype and input shape."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(Latency.module, Latency.level, Latency.seconds)
                .where(Latency.device == device, Latency.dtype == dtype, Latency.batch == batch, Latency.seq == seq)
            ).all()
        return {(module, level): seconds for module, level, seconds in rows}

    def record_latencies(self, device: str, dtype: str, batch: int, seq: int,
                         seconds: dict[tuple[str, int], float], repeats: int) -> None:
        """Write measured times in one transaction; a new measurement of a row replaces the old one."""
        with self._writing() as session:
            for (module, level), value in seconds.items():
                row = session.scalar(select(Latency).where(
                    Latency.device == device, Latency.dtype == dtype, Latency.batch == batch, Latency.seq == seq,
                    Latency.module == module, Latency.level == level))
                if row is None:
                    session.add(Latency(device=device, dtype=dtype, batch=batch, seq=seq, module=module, level=level,
                                        seconds=value, repeats=repeats))
                else:
                    row.seconds, row.repeats, row.created_at = value, repeats, now()

def check_schema(path: Path) -> int:
    """The schema version of the store at ``path`` if this paretopress can open it, as it is or once migrated.

    Reads through a read-only connection of its own, so a refused file is left byte-for-byte as it was.
    """
    try:
        connection = read_only_connection(path)
        try:
            row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise UserError(f"{path} is not a paretopress store ({error})") from error
    found = str(row[0]) if row else "none"
    if not found.isdigit():
        raise UserError(f"{path} is not a paretopress store (schema version {found})")
    version = int(found)
    if version > SCHEMA_VERSION:
        raise UserError(f"{path} has store schema version {version}, newer than this paretopress reads "
                        f"({SCHEMA_VERSION}): upgrade paretopress to open it")
    if any(old not in MIGRATIONS for old in range(version, SCHEMA_VERSION)):
        raise UserError(f"{path} has store schema version {version}, which this paretopress (version "
                        f"{SCHEMA_VERSION}) cannot migrate: open it with the paretopress release that wrote it")
    return version


def _create(path: Path) -> None:
    """A new, empty store at ``path`` (SQLite through pysqlite commits each CREATE TABLE on its own, which is why
    ``create_store_file`` has it written under a temporary name)."""
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(path))  # a path, never a URL
    try:
        Base.metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
    finally:
        engine.dispose()
