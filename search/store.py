"""The store: every study, candidate and evaluation in one SQLite file (SQLAlchemy 2.x, WAL mode).

The controller is the only writer; Ray workers return results and never open the database. Readers (CLI, notebooks)
open it read-only and may read while a job writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from paretopress.errors import UserError
from paretopress.spaces.genome import Genome

SCHEMA_VERSION = 1


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(String)


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    spec: Mapped[dict] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String)
    seed: Mapped[int] = mapped_column(Integer)
    space: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String, default="running")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=_now, onupdate=_now)


class Candidate(Base):
    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("study_id", "genome_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    genome: Mapped[str] = mapped_column(Text)
    genome_key: Mapped[str] = mapped_column(String)
    origin: Mapped[str] = mapped_column(String)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"), nullable=True)
    generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class Evaluation(Base):
    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("candidate_id", "evaluator", "pool", "sample_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    evaluator: Mapped[str] = mapped_column(String)
    pool: Mapped[str] = mapped_column(String)
    sample_key: Mapped[str] = mapped_column(String)
    samples: Mapped[list] = mapped_column(JSON)
    tokens: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    worker: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class Hypervolume(Base):
    """The hypervolume a strategy's current front dominates, once per generation: how a search converges."""

    __tablename__ = "hypervolumes"
    __table_args__ = (UniqueConstraint("study_id", "generation"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    objectives: Mapped[list] = mapped_column(JSON)
    reference: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


def sample_key(samples: Iterable[int]) -> str:
    """Canonical text of a sample set: the unique key of an evaluation together with candidate and evaluator."""
    return ",".join(str(i) for i in sorted(samples))


def spec_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested spec dicts, for a resume refusal message."""
    changed = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += spec_differences(a, b, f"{path}.")
        elif a != b:
            changed.append(f"{path}: {json.dumps(a)} -> {json.dumps(b)}")
    return changed


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class Store:
    """Typed access to one SQLite file. ``readonly`` stores never create or change the file."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        if readonly:
            if not self.path.exists():
                raise UserError(f"no store at {self.path}")
            url = f"sqlite:///file:{self.path.resolve()}?mode=ro&uri=true"
        else:
            check_writable(self.path)
            url = f"sqlite:///{self.path.resolve()}"
        self.engine = create_engine(url)
        event.listen(self.engine, "connect", self._configure_connection)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._check_schema()  # before any write: a foreign or newer file is refused untouched
        elif not readonly:
            Base.metadata.create_all(self.engine)
            with Session(self.engine) as session, session.begin():
                session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))

    def _configure_connection(self, connection: sqlite3.Connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not self.readonly:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    def _check_schema(self) -> None:
        try:
            with Session(self.engine) as session:
                meta = session.get(Meta, "schema_version")
        except DatabaseError as error:
            raise UserError(f"{self.path} is not a paretopress store ({error.orig})") from error
        if meta is None or meta.value != str(SCHEMA_VERSION):
            found = meta.value if meta else "none"
            raise UserError(f"{self.path} has store schema version {found}; this paretopress reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- studies ---------------------------------------------------------------------------------------------------

    def open_study(self, name: str, spec: dict, seed: int, space: dict) -> tuple[int, bool]:
        """Create the study, or resume it when the stored spec is identical; returns (study id, resumed)."""
        digest = spec_hash(spec)
        with Session(self.engine) as session, session.begin():
            study = session.scalar(select(Study).where(Study.name == name))
            if study is None:
                study = Study(name=name, spec=spec, spec_hash=digest, seed=seed, space=space)
                session.add(study)
                session.flush()
                return study.id, False
            if study.spec_hash != digest:
                changes = "; ".join(spec_differences(study.spec, spec))
                raise UserError(
                    f"study {name!r} exists with a different spec ({changes}); use another name or the old spec"
                )
            study.status = "running"
            return study.id, True

    def set_status(self, study_id: int, status: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.get(Study, study_id).status = status

    def studies(self) -> list[Study]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(select(Study).order_by(Study.id)))

    def study(self, ref: str | int) -> Study:
        """A study by name or numeric id."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(Study).where(Study.name == str(ref))
            study = session.scalar(query)
            if study is None and str(ref).isdigit():
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
        with Session(self.engine) as session, session.begin():
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
        with Session(self.engine) as session, session.begin():
            found = session.scalar(select(Hypervolume).where(Hypervolume.study_id == study_id,
                                                             Hypervolume.generation == generation))
            if found is None:
                session.add(Hypervolume(study_id=study_id, generation=generation, value=value,
                                        objectives=objectives, reference=reference))

    def hypervolumes(self, study_id: int) -> list[Hypervolume]:
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(Hypervolume).where(Hypervolume.study_id == study_id).order_by(Hypervolume.generation)
            return list(session.scalars(query))


def check_writable(path: Path) -> None:
    """Fail early, before any work, if the store file cannot be created or written."""
    if path.is_dir():
        raise UserError(f"store path {path} is a directory; give a file name such as {path / 'paretopress.db'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot create the store {path}: directory {parent} does not exist")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK):
        raise UserError(f"cannot write the store {path}: permission denied")
