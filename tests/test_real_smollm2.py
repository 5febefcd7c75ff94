"""The whole slice on the real SmolLM2-135M and the real Wikipedia sample, through the CLI, as a user runs it."""

import json
import re

import pytest
import yaml
from transformers import AutoModelForCausalLM

from paretopress.cli import main
from paretopress.job import JobSpec
from paretopress.run import run_job
from paretopress.store.store import Store
from tests.support import JOB

pytestmark = pytest.mark.real

def test_cli_search_and_export_on_smollm2(ray_cluster, tmp_path, capsys):
    job, db, out = tmp_path / "job.yaml", tmp_path / "s.db", tmp_path / "export"
    job.write_text(yaml.safe_dump(JOB))

    assert main(["run", str(job), "--db", str(db)]) == 0
    printed = capsys.readouterr().out
    dense_ppl, found_ppl = map(float, re.search(r"dense ([\d.]+) .* found ([\d.]+)", printed).groups())
    assert 1 < dense_ppl < found_ppl < 10 * dense_ppl  # a real model: dropping 3 of 30 blocks hurts, but not wildly

    with Store(db, readonly=True) as store:
        study = store.study("smollm2-real")
        assert study.status == "completed"
        genomes = [json.loads(c.genome) for c in store.candidates(study.id)]
    assert all(len(g) == 30 and sum(g) in (0, 3) for g in genomes)

    assert main(["export", "smollm2-real", "--db", str(db), "--candidate", "best", "--out", str(out)]) == 0
    differences = re.findall(r"held-out (\w+): export \S+ \(store \S+, relative difference (\S+)\)",
                             capsys.readouterr().out)
    assert {metric for metric, _ in differences} >= {"ppl", "kl", "params"}
    assert all(float(diff) < 1e-3 for _, diff in differences)
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 27


def test_random_strategy_on_smollm2(tmp_path):
    """The sanity baseline end to end on the real model: feasible draws, confirmed on held-out text."""
    job = JobSpec.model_validate({**JOB, "strategy": {"kind": "random", "generations": 2, "per_generation": 4,
                                                      "tokens": 512}})
    outcome = run_job(job, tmp_path / "s.db", executor="local")
    found, dense = outcome.metrics["random"], outcome.metrics["dense"]
    assert sum(outcome.genomes["random"].levels) == 3 and outcome.evaluated == 8 + 2  # draws, then held-out reports
    assert dense["ppl"] < found["ppl"] and found["kl"] > 0
