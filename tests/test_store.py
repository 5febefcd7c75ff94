"""The SQLite store: round trip, resume rules, read-only readers, bad paths."""

import sqlite3

import pytest

from paretopress.kernel.errors import UserError
from paretopress.spaces.genome import Genome
from paretopress.store.store import Store, spec_differences

SPEC = {"model": "m", "space": {"kind": "depth", "drop": 2}, "seed": 0}


def record(store, study_id, genome, samples=(0, 1), values=None, parent=None):
    return store.record(study_id, genome, "evopress", parent, 0, "calibration", samples, 2 * 128,
                        values or {"kl": 0.5}, 0.1, "test:1")


def test_round_trip(tmp_path):
    db = tmp_path / "s.db"
    with Store(db) as store:
        study_id, resumed = store.open_study("a", SPEC, 0, {"units": ["x", "y"]})
        parent, child = Genome((1, 0, 1)), Genome((0, 1, 1))
        record(store, study_id, parent)
        cid = record(store, study_id, child, values={"kl": 0.25, "ppl": 9.0}, parent=parent)
        assert not resumed
    with Store(db, readonly=True) as reader:
        assert reader.lookup(study_id, child, ("kl", "ppl"), "calibration", (1, 0)) == {"kl": 0.25, "ppl": 9.0}
        assert reader.lookup(study_id, child, ("kl",), "calibration", (0, 2)) is None
        assert reader.lookup(study_id, child, ("kl", "params"), "calibration", (0, 1)) is None
        candidates = reader.candidates(study_id)
        assert [Genome.from_json(c.genome) for c in candidates] == [parent, child]
        assert candidates[1].parent_id == candidates[0].id and candidates[1].id == cid
        assert reader.study("a").spec == SPEC and reader.study(str(study_id)).name == "a"


def test_identical_evaluation_is_stored_once(tmp_path):
    with Store(tmp_path / "s.db") as store:
        study_id, _ = store.open_study("a", SPEC, 0, {})
        for _ in range(3):
            record(store, study_id, Genome((1, 0)))
        assert len(store.evaluations(study_id)) == 1 and len(store.candidates(study_id)) == 1


def test_resume_same_spec_and_refuse_changed_spec(tmp_path):
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.open_study("a", SPEC, 0, {})
        assert store.open_study("a", SPEC, 0, {})[1] is True
        changed = {**SPEC, "space": {"kind": "depth", "drop": 3}}
        with pytest.raises(UserError, match=r"space\.drop: 2 -> 3"):
            store.open_study("a", changed, 0, {})


def test_spec_differences_name_nested_keys():
    changes = spec_differences({"a": {"b": 1}, "c": 2}, {"a": {"b": 2}, "c": 2, "d": 1})
    assert changes == ["a.b: 1 -> 2", "d: the default -> 1"]


def test_wal_mode_and_schema_version(tmp_path):
    db = tmp_path / "s.db"
    Store(db).close()
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("select value from meta where key='schema_version'").fetchone()[0] == "1"


def test_bad_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Store(tmp_path / "missing" / "s.db")
    with pytest.raises(UserError, match="is a directory"):
        Store(tmp_path)
    with pytest.raises(UserError, match="no store"):
        Store(tmp_path / "absent.db", readonly=True)
    (tmp_path / "junk.db").write_text("not a database")
    with pytest.raises(UserError, match="not a paretopress store"):
        Store(tmp_path / "junk.db", readonly=True)
