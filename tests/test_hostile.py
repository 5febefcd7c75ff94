"""Hostile input beyond job files: store paths, damaged stores, readers that change nothing, broken model folders,
two runs of one study at once, and real signals mid-search."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from transformers import BertConfig, BertModel

from paretopress.cli import main
from paretopress.store.store import Store
from tests.support import digest, job_yaml, refused, store_files, write
from tests.support.faults import GENERATIONS, evaluation_count, snapshot, stop_between_transactions

READERS = (["studies"], ["front", "tiny"], ["front", "tiny", "--json"], ["plot", "tiny", "-o", "PLOT"])


def files_beside(db) -> dict[str, str]:
    """Every file of the store's folder with its digest: the store, its -wal and -shm, and anything else."""
    return {path.name: digest(path) for path in sorted(db.parent.iterdir()) if path.is_file()}


@pytest.fixture
def stored(tiny_store, tmp_path):
    db = tmp_path / "store" / "s.db"
    db.parent.mkdir()
    shutil.copy(tiny_store, db)
    return db


@pytest.mark.parametrize("reader", READERS, ids=lambda argv: " ".join(argv))
def test_readers_change_no_byte_and_create_no_file(reader, stored, tmp_path, capsys):
    before = files_beside(stored)
    argv = [str(tmp_path / "p.png") if arg == "PLOT" else arg for arg in reader]
    assert main([*argv, "--db", str(stored)]) == 0
    assert main(["doctor", str(stored)]) == 0
    assert files_beside(stored) == before  # no -wal, no -shm, the store byte for byte


@pytest.mark.parametrize("name", ["exp#1.db", "what?.db", "100%.db", "a b.db"])
def test_store_paths_are_plain_file_names(name, tiny_model, text_files, tmp_path, capsys):
    db = tmp_path / name
    job = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files))
    assert main(["run", str(job), "--db", str(db), "--executor", "local"]) == 0
    assert main(["studies", "--db", str(db)]) == 0
    assert main(["front", "tiny", "--db", str(db)]) == 0
    assert "tiny" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["job.yaml", name])  # no stray `exp` beside it


def test_tilde_is_expanded_by_every_command(tiny_model, text_files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    job = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files))
    assert main(["run", str(job), "--db", "~/x.db", "--executor", "local"]) == 0
    assert (tmp_path / "x.db").exists() and not (tmp_path / "~").exists()
    assert main(["front", "tiny", "--db", "~/x.db"]) == 0


DAMAGE = {
    "a page overwritten": lambda data: data[:4096 * 2] + b"\xff" * 4096 + data[4096 * 3:],
    "truncated": lambda data: data[: len(data) // 3],
    "header overwritten": lambda data: b"\0" * 100 + data[100:],
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
@pytest.mark.parametrize("command", [["studies"], ["front", "tiny"], ["export", "tiny", "--candidate", "best",
                                                                     "--out", "OUT"]], ids=lambda argv: argv[0])
def test_damaged_store_is_one_line_everywhere(damage, command, stored, tmp_path, capsys):
    stored.write_bytes(DAMAGE[damage](stored.read_bytes()))
    before = files_beside(stored)
    argv = [str(tmp_path / "out") if arg == "OUT" else arg for arg in command]
    assert main([*argv, "--db", str(stored)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paretopress: error:") and "\n" not in err
    assert "damaged" in err or "not a paretopress store" in err
    assert main(["doctor", str(stored)]) in (1, 2)  # a problem listed, or the file refused: never a traceback
    assert "Traceback" not in capsys.readouterr().err
    assert files_beside(stored) == before


@pytest.fixture(scope="module")
def broken_models(tiny_model, tmp_path_factory):
    """Model folders a user may point at by mistake, each broken in one way."""
    root = tmp_path_factory.mktemp("broken-models")
    folders = {}
    for name, drop in (("no weights", "*.safetensors"), ("no tokenizer", "*token*")):
        folder = root / name.replace(" ", "-")
        shutil.copytree(tiny_model, folder)
        for file in folder.glob(drop):
            file.unlink()
        folders[name] = folder
    encoder = root / "encoder"
    BertModel(BertConfig(vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(encoder)
    folders["not a causal LM"] = encoder
    return folders


@pytest.mark.parametrize("problem, message", [("no weights", "cannot load model"),
                                              ("no tokenizer", "cannot load the tokenizer"),
                                              ("not a causal LM", "is a BertModel, not a causal language model")])
def test_broken_model_folders_are_refused_before_the_study(problem, message, broken_models, tiny_model, text_files,
                                                           tmp_path, capsys):
    bad = job_yaml(tiny_model, text_files, model=str(broken_models[problem]), name="broken")
    refused(job_yaml(tiny_model, text_files), bad, message, tmp_path, capsys)


def _command(job, db, *extra):
    return [sys.executable, "-m", "paretopress.cli", "run", str(job), "--db", str(db), *extra]


def _start_and_wait(command, db, rows: int) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while evaluation_count(db) < rows and process.poll() is None:
        time.sleep(0.01)
    assert process.poll() is None, process.stderr.read()
    return process


@pytest.mark.parametrize("existing", [False, True], ids=["new store", "existing store"])
def test_two_runs_started_at_once(existing, uninterrupted, tiny_model, text_files, tmp_path):
    job = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files, **GENERATIONS))
    db = tmp_path / "s.db"
    if existing:
        Store(db).close()
    runs = [subprocess.Popen(_command(job, db, "--executor", "local"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(), run.stderr.read()) for run in runs]
    for code, err in results:
        assert code == 0 or (code == 2 and "is being run by pid" in err.strip().splitlines()[-1]), err
    assert snapshot(db) == ("completed", *uninterrupted[1:])  # one study, nothing stored twice


@pytest.mark.parametrize("signals, executor, code", [
    ((signal.SIGINT,), "local", 130),
    ((signal.SIGINT, signal.SIGINT), "local", 130),
    ((signal.SIGTERM,), "local", 143),
    ((signal.SIGTERM,), "ray", 143),
], ids=["SIGINT", "double SIGINT", "SIGTERM", "SIGTERM under Ray"])
def test_signals_mid_search_leave_an_interrupted_study_that_resumes(signals, executor, code, uninterrupted,
                                                                    tiny_model, text_files, tmp_path):
    job = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files, **GENERATIONS))
    db = tmp_path / "s.db"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    process = subprocess.Popen(_command(job, db, "--executor", executor), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env)
    while evaluation_count(db) < 5 and process.poll() is None:
        time.sleep(0.01)
    for number in signals:
        process.send_signal(number)
        time.sleep(0.05)
    assert process.wait(timeout=120) == code, process.stderr.read()  # what it said, should it end otherwise
    last = process.stderr.read().strip().splitlines()[-1]
    assert last == (f"paretopress: interrupted by {signal.Signals(signals[0]).name}; run the same command again "
                    f"to resume")
    assert snapshot(db)[0] == "interrupted"
    assert subprocess.run(_command(job, db, "--executor", "local"), capture_output=True).returncode == 0
    assert snapshot(db) == ("completed", *uninterrupted[1:])


@pytest.mark.parametrize("argv, message", [
    (["front", "²"], "no study '²'"),
    (["export", "tiny", "--candidate", "²", "--out", "OUT"], "--candidate must be a candidate id or 'best'"),
    (["export", "tiny", "--candidate", "best", "--out", "FILE"], "exists and is not empty"),
    (["plot", "tiny", "-o", "DIR"], "Is a directory"),
    (["plot", "tiny", "-o", "INFILE"], "file is not a directory"),
    (["export", "tiny", "--candidate", "best", "--out", "INFILE"], "Not a directory"),
], ids=["study id ²", "candidate id ²", "export over a file", "plot into a directory", "plot into a file's folder",
        "export into a file's folder"])
def test_reader_mistakes_are_one_line(argv, message, stored, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "dir.png").mkdir()
    places = {"OUT": tmp_path / "out", "FILE": tmp_path / "file", "DIR": tmp_path / "dir.png",
              "INFILE": tmp_path / "file" / "p.png"}
    before = files_beside(stored)
    assert main([*(str(places.get(arg, arg)) for arg in argv), "--db", str(stored)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert files_beside(stored) == before and (tmp_path / "file").read_text() == "mine"


def _other_apps_database(path):
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE notes (body TEXT)")
    connection.commit()
    connection.close()


NOT_STORES = {
    "a directory": lambda path: path.mkdir(),
    "an empty file": lambda path: path.write_bytes(b""),
    "a text file": lambda path: path.write_text("studies: none\n"),
    "another program's SQLite file": _other_apps_database,
}


@pytest.mark.parametrize("kind", list(NOT_STORES), ids=list(NOT_STORES))
@pytest.mark.parametrize("command", [["studies"], ["front", "tiny"], ["doctor"]], ids=lambda argv: argv[0])
def test_what_is_no_store_is_refused_by_readers(kind, command, tmp_path, capsys):
    path = tmp_path / "s.db"
    NOT_STORES[kind](path)
    before = files_beside(path) if path.is_file() else {}
    argv = [*command, str(path)] if command == ["doctor"] else [*command, "--db", str(path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paretopress: error:") and "\n" not in err and str(path) in err
    assert (files_beside(path) if path.is_file() else {}) == before


def test_a_live_holder_refuses_a_second_run_and_a_killed_one_is_taken_over(uninterrupted, tiny_model, text_files,
                                                                           tmp_path):
    job = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files, **GENERATIONS))
    db = tmp_path / "s.db"
    holder = _start_and_wait(_command(job, db, "--executor", "local"), db, rows=5)
    stop_between_transactions(holder, db)
    second = subprocess.run(_command(job, db, "--executor", "local"), capture_output=True, text=True)
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1].startswith(
        f"paretopress: error: study 'tiny' is being run by pid {holder.pid} on ")
    holder.kill()  # SIGKILL reaches a stopped process; wait() reaps it, so its pid is gone
    holder.wait()
    assert subprocess.run(_command(job, db, "--executor", "local"), capture_output=True).returncode == 0
    assert snapshot(db) == ("completed", *uninterrupted[1:])


@pytest.mark.parametrize("where", ["a file", "inside a file"])
def test_a_cache_that_cannot_be_used_is_one_line(where, stored, tiny_model, text_files, tmp_path, monkeypatch,
                                                  capsys):
    (tmp_path / "file").write_text("mine")
    monkeypatch.setenv("PARETOPRESS_CACHE", str(tmp_path / "file" / ("" if where == "a file" else "cache")))
    before = store_files(stored)
    job = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files, name="other"))
    assert main(["run", str(job), "--db", str(stored), "--executor", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paretopress: error: cannot use the cache folder") and "PARETOPRESS_CACHE" in err
    assert "\n" not in err and store_files(stored) == before
