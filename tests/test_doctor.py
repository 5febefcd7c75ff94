"""`paretopress doctor` on a sound store, a damaged one, a foreign file and a store of another schema version."""

import shutil
import sqlite3

from paretopress.cli import main


def damaged_copy(store, tmp_path, *statements):
    copy = tmp_path / "copy.db"
    shutil.copy(store, copy)
    connection = sqlite3.connect(copy)  # foreign keys off: the kind of damage a foreign writer could leave
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()
    return copy


def test_sound_store(tiny_store, capsys):
    assert main(["doctor", str(tiny_store)]) == 0
    out = capsys.readouterr().out
    assert "store is sound" in out and "2 studies" in out and "problem" not in out


def test_orphans_are_reported(tiny_store, tmp_path, capsys):
    copy = damaged_copy(tiny_store, tmp_path, "DELETE FROM candidates WHERE id = (SELECT min(id) FROM candidates)",
                        "UPDATE studies SET status = 'running' WHERE name = 'tiny'")
    assert main(["doctor", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "evaluations of candidates that do not exist" in out and "problem(s) found" in out
    assert "not completed: tiny (running)" in out


def test_foreign_file_and_other_schema_version(tiny_store, tmp_path, capsys):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    assert main(["doctor", str(junk)]) == 2
    assert "is not a paretopress store" in capsys.readouterr().err
    newer = damaged_copy(tiny_store, tmp_path, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    assert main(["doctor", str(newer)]) == 2
    err = capsys.readouterr().err
    assert "schema version 99" in err and err.count("\n") == 1
