"""The store's tables, its schema version and the migrations between versions (SQLAlchemy 2.x declarative)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1

#: How an older store is brought up to date when it is opened for writing: MIGRATIONS[v] turns a version-v store into
#: a version v + 1 one, in the same transaction as the new version number. A new table needs neither a migration nor
#: a new version (opening a store for writing creates the tables it lacks); a changed table or column needs both.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}


def now() -> datetime:
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
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=now, onupdate=now)


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
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


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
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


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
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class BaselineRun(Base):
    """A one-shot baseline's genome at one budget of a study, and what computing it cost (the whole run's)."""

    __tablename__ = "baseline_runs"
    __table_args__ = (UniqueConstraint("study_id", "settings_hash", "label"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    method: Mapped[str] = mapped_column(String)
    settings: Mapped[dict] = mapped_column(JSON)
    settings_hash: Mapped[str] = mapped_column(String)
    label: Mapped[str] = mapped_column(String)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    seconds: Mapped[float] = mapped_column(Float)
    passes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Latency(Base):
    """Median seconds of one module at one width, on one device and input shape: the latency table of speedup targets.

    ``module`` names a sub-layer type by everything but its width that sets its time (or names a whole model);
    ``level`` is the width (KV groups or FFN channels kept, 0 for the dropped sub-layer). Every study shares the rows.
    """

    __tablename__ = "latencies"
    __table_args__ = (UniqueConstraint("device", "dtype", "batch", "seq", "module", "level"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device: Mapped[str] = mapped_column(String)
    dtype: Mapped[str] = mapped_column(String)
    batch: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    module: Mapped[str] = mapped_column(String)
    level: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    repeats: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Lease(Base):
    """Who runs a study now: one row while a `paretopress run` works on it, so a second run of it is refused."""

    __tablename__ = "leases"
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    host: Mapped[str] = mapped_column(String)
    pid: Mapped[int] = mapped_column(Integer)
    since: Mapped[datetime] = mapped_column(DateTime, default=now)
    heartbeat: Mapped[datetime] = mapped_column(DateTime, default=now)
