"""Store schema versions: a store of another version is refused untouched by every command; tables added since a
version-1 store was written are created on opening it; MIGRATIONS brings an older version up to date, atomically."""

import shutil
import sqlite3

import pytest
from sqlalchemy import inspect

from paretopress.cli import main
from paretopress.kernel.errors import UserError
from paretopress.store import store as store_module
from paretopress.store.store import Base, Store
from tests.support import digest, job_yaml, write

FIRST_TABLES = ("meta", "studies", "candidates", "evaluations")  # what the first version-1 stores held


def copy_with(tiny_store, tmp_path, *statements: str):
    """A copy of the tiny store changed with raw SQL, as an older or newer paretopress could have left it."""
    copy = tmp_path / "copy.db"
    shutil.copy(tiny_store, copy)
    connection = sqlite3.connect(copy)
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()
    return copy


def schema_of(db) -> tuple[str, set[str]]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return version, tables
    finally:
        connection.close()


def commands(db, job, out) -> dict[str, list[str]]:
    return {
        "run": ["run", str(job), "--db", str(db), "--executor", "local"],
        "studies": ["studies", "--db", str(db)],
        "front": ["front", "tiny", "--db", str(db)],
        "plot": ["plot", "tiny", "-o", str(out / "front.png"), "--db", str(db)],
        "export": ["export", "tiny", "--candidate", "best", "--out", str(out / "export"), "--db", str(db)],
        "doctor": ["doctor", str(db)],
    }


@pytest.mark.parametrize("version, says", [("99", "newer than this paretopress reads (1): upgrade paretopress"),
                                           ("0", "cannot migrate: open it with the paretopress release")])
def test_other_versions_are_refused_untouched_by_every_command(version, says, tiny_store, tiny_model, text_files,
                                                               tmp_path, capsys):
    db = copy_with(tiny_store, tmp_path, f"UPDATE meta SET value = '{version}' WHERE key = 'schema_version'")
    before = digest(db)
    job = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files))
    for name, argv in commands(db, job, tmp_path).items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert f"has store schema version {version}, " in err and says in err and err.count("\n") == 1, (name, err)
        assert digest(db) == before, name
    assert not (tmp_path / "export").exists() and not (tmp_path / "front.png").exists()


def test_a_foreign_database_is_refused_untouched_even_when_opened_for_writing(tmp_path):
    foreign = tmp_path / "other.db"
    connection = sqlite3.connect(foreign)  # rollback journal: opening it as a writable store would switch it to WAL
    connection.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    connection.commit()
    connection.close()
    before = digest(foreign)
    with pytest.raises(UserError, match="is not a paretopress store"):
        Store(foreign)
    assert digest(foreign) == before


def test_tables_added_since_are_created_without_a_new_version(tiny_store, tmp_path, capsys):
    later = set(Base.metadata.tables) - set(FIRST_TABLES)
    db = copy_with(tiny_store, tmp_path, *(f"DROP TABLE {table}" for table in later))
    before = digest(db)
    with Store(db, readonly=True) as reader:  # a reader never writes: the tables stay missing
        assert reader.study("tiny").status == "completed"
    assert main(["doctor", str(db)]) == 0  # a missing table is no problem: only news
    assert f"created by the next job that writes to it: {', '.join(sorted(later))}" in capsys.readouterr().out
    assert digest(db) == before
    with Store(db) as store:
        assert set(inspect(store.engine).get_table_names()) == set(Base.metadata.tables)
        assert store.candidates(store.study("tiny").id) and store.evaluations(store.study("tiny").id)
    assert schema_of(db)[0] == "1"


def add_column(connection: sqlite3.Connection) -> None:
    connection.execute("ALTER TABLE studies ADD COLUMN note TEXT")


def add_column_then_fail(connection: sqlite3.Connection) -> None:
    add_column(connection)
    raise RuntimeError("migration failed half-way")


def test_migration_brings_an_older_store_up_to_date(tiny_store, tmp_path, monkeypatch):
    db = copy_with(tiny_store, tmp_path)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(store_module, "MIGRATIONS", {1: add_column})
    with pytest.raises(UserError, match="has store schema version 1; run a job on it"):
        Store(db, readonly=True)  # readers never migrate
    Store(db).close()
    version, _ = schema_of(db)
    connection = sqlite3.connect(db)
    columns = {row[1] for row in connection.execute("PRAGMA table_info(studies)")}
    connection.close()
    assert version == "2" and "note" in columns
    with Store(db, readonly=True) as reader:
        assert reader.study("tiny").status == "completed"


def test_a_failed_migration_leaves_the_store_as_it_was(tiny_store, tmp_path, monkeypatch):
    db = copy_with(tiny_store, tmp_path)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(store_module, "MIGRATIONS", {1: add_column_then_fail})
    with pytest.raises(RuntimeError, match="half-way"):
        Store(db)
    connection = sqlite3.connect(db)
    columns = {row[1] for row in connection.execute("PRAGMA table_info(studies)")}
    connection.close()
    assert schema_of(db)[0] == "1" and "note" not in columns  # the ALTER TABLE was rolled back with the step
