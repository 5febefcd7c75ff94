"""A disk that fills up: one line and exit code 2, a sound store, and the same command completes the study once there
is space again.

A full disk is simulated without root: the CLI runs with a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored), so a write
past it fails with EFBIG, which SQLite reports as a disk I/O error. Where mounting is allowed (root), a real 256 KiB
tmpfs fills up too (SQLite: SQLITE_FULL) and is then grown.
"""

import errno
import resource
import shutil
import signal
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from paretopress.cli import main
from paretopress.kernel.errors import user_message
from tests.support import job_yaml, write
from tests.support.faults import GENERATIONS, evaluation_count, snapshot


def run_with_file_limit(command: list[str], limit: int | None) -> subprocess.CompletedProcess:
    """Run ``command`` unable to grow any file past ``limit`` bytes (no limit: None)."""

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead of failing the write
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(command, capture_output=True, text=True, preexec_fn=limit_files if limit else None)


def integrity(db) -> str:
    engine = create_engine(f"sqlite:///file:{db}?mode=ro&uri=true")
    try:
        with engine.connect() as connection:
            return connection.execute(text("PRAGMA integrity_check")).scalar_one()
    finally:
        engine.dispose()


def study_command(job, db) -> list[str]:
    return [sys.executable, "-m", "paretopress.cli", "run", str(job), "--db", str(db), "--executor", "local"]


def failed_mid_study_with_one_line(full: subprocess.CompletedProcess, db, says: str, reference, capsys) -> None:
    """The run ended with exit 2 and one clear last line, part-way, leaving a sound store."""
    last = full.stderr.strip().splitlines()[-1]  # progress lines come first
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr
    assert last.startswith(f"paretopress: error: cannot write the store: {says}") and "run the same" in last, last
    assert 0 < evaluation_count(db) < len(reference[2])
    assert integrity(db) == "ok"
    assert main(["doctor", str(db)]) == 0
    assert "store is sound" in capsys.readouterr().out


def test_disk_full_mid_study_then_resumed(uninterrupted, tiny_model, text_files, tmp_path, capsys):
    job, db = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files, **GENERATIONS)), tmp_path / "s.db"
    full = run_with_file_limit(study_command(job, db), 192 * 1024)  # the caches are warm: only the store grows
    failed_mid_study_with_one_line(full, db, "disk I/O error", uninterrupted, capsys)
    assert run_with_file_limit(study_command(job, db), None).returncode == 0
    assert snapshot(db) == ("completed", *uninterrupted[1:])  # resumed to exactly the uninterrupted study


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs; skips where mounting is not allowed (not root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                                                   capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_real_full_filesystem_then_grown(small_disk, uninterrupted, tiny_model, text_files, capsys):
    job = write(small_disk.parent / "job.yaml", job_yaml(tiny_model, text_files, **GENERATIONS))
    db = small_disk / "s.db"
    full = subprocess.run(study_command(job, db), capture_output=True, text=True)
    failed_mid_study_with_one_line(full, db, "database or disk is full (SQLITE_FULL)", uninterrupted, capsys)
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    assert subprocess.run(study_command(job, db), capture_output=True).returncode == 0
    assert snapshot(db) == ("completed", *uninterrupted[1:])


def test_disk_full_while_creating_the_store_leaves_no_store(uninterrupted, tiny_model, text_files,
                                                            tmp_path):
    job, db = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files, **GENERATIONS)), tmp_path / "s.db"
    full = run_with_file_limit(study_command(job, db), 8 * 1024)
    assert full.returncode == 2 and "cannot write the store" in full.stderr.strip().splitlines()[-1], full.stderr
    assert list(tmp_path.iterdir()) == [job]  # neither a half-made store nor its temporary file


def test_user_messages_outside_sqlite_are_named():
    error = OSError(errno.ENOSPC, "No space left on device", "cache/teacher.safetensors")
    assert user_message(RuntimeError("wrapped")) is None
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = error
    assert user_message(wrapped).startswith("cannot write cache/teacher.safetensors: No space left on device; free")
