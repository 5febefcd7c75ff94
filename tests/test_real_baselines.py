"""Baselines on the real SmolLM2-135M and the real Wikipedia sample, through the CLI as a user runs them."""

import pytest
import torch
import yaml

from paretopress.cli import main
from paretopress.inputs.data import WIKI_SAMPLE, load_documents, pack_samples
from paretopress.inputs.models import load_model, load_tokenizer
from paretopress.search.baselines.base import Calibration
from paretopress.spaces.sparsity import SparsitySpace
from paretopress.store.store import Store
from tests.support import JOB, baseline

pytestmark = pytest.mark.real


def test_depth_baselines_from_the_cli(tmp_path, capsys):
    job = {**JOB, "name": "smollm2-baselines", "space": {"kind": "depth", "drop": 6},
           "strategy": {**JOB["strategy"], "seeds": {"baselines": ["shortgpt", "angular"]}},  # no 31-pass spdy
           "baselines": [{"method": "shortgpt", "samples": 4}, {"method": "angular", "samples": 4}]}
    path, db = tmp_path / "job.yaml", tmp_path / "s.db"
    path.write_text(yaml.safe_dump(job))
    assert main(["baseline", str(path), "--db", str(db), "--executor", "local"]) == 0
    table = capsys.readouterr().out
    with Store(db, readonly=True) as store:
        study = store.study("smollm2-baselines")
        runs = {run.method: run for run in store.baseline_runs(study.id)}
        genomes = {c.id: c.genome for c in store.candidates(study.id)}
    assert {m: r.passes for m, r in runs.items()} == {"shortgpt": 1, "angular": 1}
    for run in runs.values():
        levels = yaml.safe_load(genomes[run.candidate_id])
        assert sum(levels) == 6 and levels[0] == 0  # six blocks exactly; none drops the first block
    assert all(method in table for method in runs)


def test_owl_on_real_layers():
    """OWL's block sparsities average the budget and span 2 * lambda; the snapped genome keeps the budget exactly."""
    model = load_model("smollm2-135m")
    tokens = pack_samples(load_documents(WIKI_SAMPLE).calibration, load_tokenizer("smollm2-135m"), 128, 4)
    space = SparsitySpace(model, 0.5, "wanda", levels_per_side=8)
    owl = baseline("owl")
    sparsity = owl.block_sparsity(space, Calibration(model, tokens, 4))
    assert sum(sparsity) / len(sparsity) == pytest.approx(0.5)
    assert max(sparsity) - min(sparsity) == pytest.approx(0.16)
    genome = owl.propose([space], Calibration(model, tokens, 4))[0]
    assert space.is_feasible(genome)
    assert space.cost(genome)["params"] == space.cost(space.uniform())["params"]
    per_block = torch.tensor(genome.levels, dtype=torch.float64).reshape(30, 7).mean(1)
    assert torch.corrcoef(torch.stack([per_block, torch.tensor(sparsity)]))[0, 1] > 0.9
