"""How the store's file is opened: plain paths (never SQLite URI syntax), readers that change nothing on disk, and
a writer whose transactions take SQLite's write lock when they begin."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool

from paretopress.kernel.errors import UserError

#: SQLite's primary result codes of a file that is not (or no longer) a database: SQLITE_CORRUPT, SQLITE_NOTADB
DAMAGED_CODES = {11, 26}


def store_path(path: str | Path) -> Path:
    """The file a ``--db`` value names: ``~`` expanded; ``#``, ``?`` and ``%`` are plain characters."""
    return Path(path).expanduser()


def read_only_connection(path: Path) -> sqlite3.Connection:
    """A connection that neither writes the store nor creates a file beside it.

    While a writer works, its ``-wal`` file is there and ``mode=ro`` reads through it. Without one, ``mode=ro``
    would create ``-wal`` and ``-shm`` files (and fail in a read-only folder), so the file is opened ``immutable``:
    nothing is writing it at that moment, and each query opens a new connection (``NullPool``) that looks again.
    """
    mode = "mode=ro" if path.with_name(f"{path.name}-wal").exists() else "immutable=1"
    return sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, timeout=30, check_same_thread=False)


def read_only_engine(path: Path) -> Engine:
    engine = create_engine("sqlite://", creator=lambda: read_only_connection(path), poolclass=NullPool)
    _name_damage(engine, path)
    return engine


def writer_engine(path: Path) -> Engine:
    """Every transaction begins with ``BEGIN IMMEDIATE``: two runs that open one study at once are serialised,
    instead of both reading "no such study" and one failing on its insert."""
    engine = create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    )
    event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
    _name_damage(engine, path)
    return engine


def _name_damage(engine: Engine, path: Path) -> None:
    """A damaged file's SQLite error becomes one line naming the store (every command, not only those that check)."""

    def damaged(context) -> None:
        error = context.original_exception
        if getattr(error, "sqlite_errorcode", 0) & 0xFF in DAMAGED_CODES:
            raise UserError(f"the store {path} is damaged ({error}); `paretopress doctor {path}` says what is "
                            f"wrong; restore it from a copy") from error

    event.listen(engine, "handle_error", damaged)


def create_store_file(path: Path, build: Callable[[Path], None]) -> None:
    """Write a new store under a name of this process's own, then link it into place unless another process got
    there first (its store is then used): a full disk or a crash leaves no half-made store, and two runs creating
    one store at once do not clobber each other."""
    for leftover in path.parent.glob(f".{path.name}.*.partial*"):  # of a creation killed before it could clean up
        pid = leftover.name[len(path.name) + 2:].split(".")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            leftover.unlink(missing_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        build(partial)
        if path.exists() and path.stat().st_size == 0:  # an empty file (``touch``): ours replaces it
            os.replace(partial, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(partial, path)
    finally:
        for own in (partial, partial.with_name(f"{partial.name}-journal")):
            own.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with this id runs (a lease's holder, a creation's leftovers)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def check_writable(path: Path) -> None:
    """Fail early, before any work, if the store file cannot be created or written."""
    if path.is_dir():
        raise UserError(f"store path {path} is a directory; give a file name such as {path / 'paretopress.db'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        state = "is not a directory" if parent.exists() else "does not exist"
        raise UserError(f"cannot create the store {path}: {parent} {state}")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK):
        raise UserError(f"cannot write the store {path}: permission denied")
