"""The command line on bad input: one line on stderr, exit code 2, the store byte-for-byte unchanged."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from paretopress.cli import main
from paretopress.job import load_job
from tests.support import DELETE, digest, job_yaml, refused, write

BAD_JOBS = {
    "unknown top-level key": ({"spaec": 1}, "spaec: unknown key"),
    "unknown nested key": ({"space.dorp": 2}, "space.dorp: unknown key"),
    "budget larger than the units": ({"space.drop": 9}, "drop=9 is impossible"),
    "negative budget": ({"space.drop": -1}, "space.drop"),
    "wrong type": ({"strategy.generations": "many"}, "strategy.generations"),
    "unknown model alias": ({"model": "no-such-model"}, "unknown model 'no-such-model'"),
    "unknown space": ({"space.kind": "lowrank"}, "space.kind"),
    "unknown strategy": ({"strategy.kind": "annealing"}, "strategy.kind"),
    "survivors grow": ({"strategy.stages": [{"survivors": 1, "tokens": 64}, {"survivors": 2, "tokens": 64}]},
                       "must not grow"),
    "stage larger than the pool": ({"strategy.stages": [{"survivors": 1, "tokens": 10_000}]}, "needs 313 samples"),
    "missing data file": ({"data.data_files": ["/nonexistent/file.txt"]}, "nonexistent"),
    "unknown data alias": ({"data": "no-such-data"}, "no-such-data"),
    "missing model": ({"model": DELETE}, "model"),
    "duplicate budgets": ({"space.drop": [2, 2]}, "distinct"),
    "list of budgets for nsga2": ({"strategy": {"kind": "nsga2", "tokens": 64}, "space.drop": [2, 3]},
                                  "give one number"),
    "zero offspring": ({"strategy.offspring": 0}, "strategy.offspring"),
    "last stage keeps two": ({"strategy.stages": [{"survivors": 2, "tokens": 64}]}, "exactly 1 survivor"),
    "sequence too short": ({"evaluation.seq_len": 4}, "evaluation.seq_len"),
    "held-out fraction of one": ({"evaluation.heldout_fraction": 1.0}, "evaluation.heldout_fraction"),
    "empty name": ({"name": ""}, "name"),
    "seed not a number": ({"seed": "lucky"}, "seed"),
    "data of the wrong type": ({"data": 5}, "data"),
    "negative hypervolume reference": ({"front": {"reference_kl": -1}}, "front.reference_kl"),
    "no workers": ({"run.workers": 0}, "run.workers"),
    "unknown device": ({"run.device": "tpu"}, "run.device"),
    "no GPU per worker": ({"run.gpus_per_worker": 0}, "run.gpus_per_worker"),
    "bytes front of a depth space": ({"front": {"cost": "bytes"}}, "front.cost: a depth space has no bytes cost"),
    "baseline of another space": ({"baselines": [{"method": "owl"}]}, "owl applies to sparsity spaces, not depth"),
    "unknown baseline": ({"baselines": [{"method": "oracle"}]}, "baselines.0.method"),
    "owl setting on another baseline": ({"baselines": [{"method": "shortgpt", "m": 3}]}, "baselines.0.m: unknown key"),
    "baseline listed twice": ({"baselines": [{"method": "spdy"}, {"method": "spdy"}]}, "listed twice"),
    "baseline samples beyond the pool": ({"baselines": [{"method": "spdy", "samples": 99}]}, "baselines.0.samples"),
    "warm start of another space": ({"strategy.warm_start": "uniform"}, "strategy.warm_start"),
    "unknown evaluation dtype": ({"evaluation.dtype": "int8"}, "evaluation.dtype"),
    "negative seed": ({"seed": -1}, "seed"),
    "seed beyond 63 bits": ({"seed": 2**64}, "seed"),
    "offspring beyond any machine": ({"strategy.offspring": 10**18}, "strategy.offspring"),
    "no tail samples": ({"evaluation.tail_samples": 0}, "evaluation.tail_samples"),
    "top_k beyond the vocabulary": ({"evaluation.top_k": 100_000}, "evaluation.top_k: 100000 is more than"),
    "sequence beyond the positions": ({"evaluation.seq_len": 512, "evaluation.calibration_samples": 4},
                                      "evaluation.seq_len: 512 is more than the 256 positions"),
    "warm start and seeds": ({"strategy.warm_start": "shortgpt", "strategy.seeds": {"random": 2}},
                             "give warm_start (start from that baseline) or seeds"),
    "seed baseline of another space": ({"strategy.seeds": {"baselines": ["owl"]}},
                                       "strategy.seeds.baselines.0: owl applies to sparsity spaces, not depth"),
    "unknown seed baseline": ({"strategy.seeds": {"baselines": ["oracle"]}}, "unknown baseline 'oracle'"),
    "heldout_seq_len beyond the positions": ({"evaluation.heldout_seq_len": 512},
                                             "evaluation.heldout_seq_len: 512 is more than the 256 positions"),
    "missing heldout_data file": ({"evaluation.heldout_data": {"path": "text", "data_files": ["/nonexistent/o.txt"]}},
                                  "nonexistent"),
    "batch beyond the memory": ({"run.batch_size": 10**7}, "run.batch_size: 2 workers x 10000000 samples"),
    "name that reads as a study id": ({"name": "1"}, "name: '1' reads as a study id"),
    "file format without files": ({"data": {"path": "text"}}, "data source 'text' is a file format: name the files"),
    "unknown strategy of a space": ({"strategy": {"kind": "nsga2", "tokens": 64}, "space": {"kind": "sparsity",
                                     "sparsity": 0.5}}, "nsga2 searches depth and width spaces only"),
}


@pytest.mark.parametrize("case", list(BAD_JOBS), ids=list(BAD_JOBS))
def test_bad_job_files(case, tiny_model, text_files, tmp_path, capsys):
    changes, message = BAD_JOBS[case]
    refused(job_yaml(tiny_model, text_files), job_yaml(tiny_model, text_files, **changes), message, tmp_path, capsys)


RAW_JOBS = {  # what a YAML mapping cannot say: the file's text itself
    "a key given twice": (lambda text: f"seed: 0\n{text}", "'seed' is given twice (lines 1 and"),
    "an alias": (lambda text: f"{text}front: &ref {{reference_kl: 2.0}}\nextra: *ref\n",
                 "aliases (*ref) are not allowed"),
    "not UTF-8": (lambda text: f"# caf\xe9\n{text}", "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(RAW_JOBS), ids=list(RAW_JOBS))
def test_job_file_text_problems_are_one_line(case, tiny_model, text_files, tmp_path, capsys):
    change, message = RAW_JOBS[case]
    text = change(yaml.safe_dump(job_yaml(tiny_model, text_files)))
    job = tmp_path / "bad.yaml"
    job.write_bytes(text.encode("latin-1"))
    assert main(["run", str(job), "--db", str(tmp_path / "s.db"), "--executor", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "s.db").exists()


def test_changed_spec_under_the_same_name_is_refused(tiny_model, text_files, tmp_path, capsys):
    db = tmp_path / "s.db"
    assert main(["run", str(write(tmp_path / "a.yaml", job_yaml(tiny_model, text_files))), "--db", str(db),
                 "--executor", "local"]) == 0
    before = digest(db)
    changed = write(tmp_path / "a.yaml", job_yaml(tiny_model, text_files, **{"space.drop": 3}))
    assert main(["run", str(changed), "--db", str(db), "--executor", "local"]) == 2
    assert "space.drop: 2 -> 3" in capsys.readouterr().err
    assert digest(db) == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "missing.yaml"], "does not exist"),
        (["front", "nope"], "no store"),
        (["frobnicate"], "invalid choice"),
        (["export", "s"], "required"),
        (["export", "s", "--candidate", "best", "--out", "x"], "no store"),
        (["front", "s", "--csv", "--json"], "not allowed with"),
        (["run", "job.yaml", "--address", "no-port"], "is not HOST:PORT"),
        (["run", "job.yaml", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
        (["run", "job.yaml", "--address", "127.0.0.1:1", "--executor", "local"], "cannot be combined"),
        (["run", "job.yaml", "--executor", "gpu"], "invalid choice"),
    ],
)
def test_bad_arguments(argv, message, tmp_path, monkeypatch, capsys, tiny_model, text_files):
    """Each case alone, on a cold `datasets` cache: its progress bars must not reach the one line either."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_malformed_yaml_and_unwritable_store(tmp_path, tiny_model, text_files, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: [unclosed\n")
    assert main(["run", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    good = write(tmp_path / "good.yaml", job_yaml(tiny_model, text_files))
    assert main(["run", str(good), "--db", str(tmp_path / "no" / "dir" / "s.db")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_script_exit_code(tmp_path):
    """The installed entry point, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "paretopress.cli", "run", str(tmp_path / "x.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_example_job_file_is_valid(path):
    """The README and RESULTS.md run these files; a schema change must not leave one behind."""
    assert load_job(path).name == path.stem
