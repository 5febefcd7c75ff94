"""The layout change kept behaviour: a store written before it opens unchanged and holds exactly what the same job
files and seeds produce now (genomes, values, baselines, hypervolumes, fronts).

``fixtures/before-layout.db`` was written by the code before the move (commit 5635044) with ``STUDIES`` below on the
tiny model, by ``python -m tests.test_unchanged OUT.db``. Width studies are left out: their budgets come from
measured latencies, which no two runs share. The EvoPress studies say ``seeds: null``: screening seeds for the first
parent came later and changes what a search finds on purpose; with it turned off the old searches must come back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "before-layout.db"
SPARSITY = {"kind": "sparsity", "sparsity": 0.5, "builder": "wanda", "levels": 3, "calibration_samples": 8}
QUANT = {"kind": "quant", "bits": 3.5, "widths": [2, 3, 4], "group_size": 16, "builder": "rtn",
         "calibration_samples": 8}
# EvoPress as it ran then: from the space's own start or a warm start, no noise measured after the search
OLD_START = {"strategy.seeds": None, "strategy.noise_draws": 0}
STUDIES = {
    "depth": {**OLD_START, "strategy.warm_start": "shortgpt", "baselines": [{"method": "angular", "samples": 4}]},
    "sublayer": {**OLD_START, "space.granularity": "sublayer", "space.drop": 3,
                 "baselines": [{"method": "finercut", "samples": 4}]},
    "sweep": {**OLD_START, "space.drop": [1, 2]},
    "nsga2": {"strategy": {"kind": "nsga2", "generations": 2, "population": 4, "tokens": 64}},
    "sparsity": {**OLD_START, "space": SPARSITY, "baselines": [{"method": "uniform"}, {"method": "owl", "samples": 4},
                                                               {"method": "spdy", "samples": 4}]},
    "quant": {**OLD_START, "space": QUANT},
    "joint": {**OLD_START, "space": {"kind": "joint", "depth": {"drop": 1}, "quant": {**QUANT, "bits": 4.0}}},
}


def study_rows(db: Path) -> dict[str, dict]:
    """Everything a study holds that a search decides, read with plain sqlite3 (no paretopress code involved)."""
    # the fixture is read immutable, so no -wal or -shm appears beside it in the repository (mode=ro creates them)
    flags = "mode=ro&immutable=1" if db == FIXTURE else "mode=ro"
    with sqlite3.connect(f"file:{db}?{flags}", uri=True) as connection:
        studies = connection.execute("SELECT id, name, spec, seed, space, status FROM studies ORDER BY name").fetchall()
        rows = {}
        for study_id, name, spec, seed, space, status in studies:
            def select(query: str, study_id=study_id) -> list[tuple]:
                return sorted(connection.execute(query, (study_id,)).fetchall(), key=repr)
            rows[name] = {
                "study": (_without_paths(json.loads(spec)), seed, space, status),
                "candidates": select("SELECT c.genome, c.origin, c.generation, p.genome FROM candidates c "
                                     "LEFT JOIN candidates p ON p.id = c.parent_id WHERE c.study_id = ?"),
                "evaluations": select("SELECT c.genome, e.evaluator, e.pool, e.samples, e.tokens, e.value "
                                      "FROM evaluations e JOIN candidates c ON c.id = e.candidate_id "
                                      "WHERE c.study_id = ?"),
                "hypervolumes": select("SELECT generation, value, objectives, reference FROM hypervolumes "
                                       "WHERE study_id = ?"),
                "baselines": select("SELECT b.method, b.settings, b.label, c.genome, b.passes FROM baseline_runs b "
                                    "JOIN candidates c ON c.id = b.candidate_id WHERE b.study_id = ?"),
            }
    return rows


def _without_paths(spec: dict) -> dict:
    """The study's spec less where its model and text files were (the fixture names them relatively)."""
    return {key: value for key, value in spec.items() if key not in ("model", "data")}


def run_studies(db: Path, tiny_model: Path, text_files: list[Path]) -> None:
    from paretopress.job import JobSpec
    from paretopress.run import run_job
    from tests.support import job_yaml

    for name, changes in STUDIES.items():
        run_job(JobSpec.model_validate(job_yaml(tiny_model, text_files, name=name, **changes)), db, executor="local")


def _close(a, b) -> bool:
    """Equal, floats to 1e-6 relative or 1e-7 absolute: the same float32 arithmetic on another CPU rounds its last
    bits differently, which moves a KL of the tiny model (values near 1e-6, differences of nearly equal log-probs)
    by up to 3e-8 (measured on a machine other than the one that wrote the fixture; every genome agreed)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-6, abs=1e-7)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[key], b[key]) for key in a)
    if isinstance(a, tuple | list) and type(a) is type(b) and len(a) == len(b):
        return all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_the_same_jobs_give_the_same_studies(tiny_model, text_files, tmp_path):
    run_studies(tmp_path / "now.db", tiny_model, text_files)
    before, now = study_rows(FIXTURE), study_rows(tmp_path / "now.db")
    assert list(now) == list(before)
    for name in before:
        for part in before[name]:
            assert _close(now[name][part], before[name][part]), (name, part)


def test_a_store_from_before_opens_and_reads_unchanged(tmp_path, capsys):
    from paretopress.api import open_store
    from paretopress.cli import main

    db = tmp_path / "before.db"
    shutil.copy(FIXTURE, db)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    assert main(["doctor", str(db)]) == 0
    assert main(["studies", "--db", str(db)]) == 0
    assert main(["front", "depth", "--db", str(db)]) == 0
    with open_store(db) as view:
        assert len(view.studies()) == len(STUDIES)
        assert not view.front("sparsity").empty
    out = capsys.readouterr().out
    assert "store is sound" in out and "drop=2" in out and "sparsity=0.5" in out
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


if __name__ == "__main__":  # write the fixture: python -m tests.test_unchanged OUT.db
    from tests.support import make_tiny_model, write_text_files

    out = Path(sys.argv[1]).resolve()
    os.chdir(out.parent)  # the store names the model and text relatively, not by this machine's paths
    Path("text").mkdir()
    files = [p.relative_to(Path.cwd()) for p in write_text_files(Path.cwd() / "text")]
    run_studies(out, make_tiny_model(Path("model"), files), files)
