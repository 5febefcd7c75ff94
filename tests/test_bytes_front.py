"""``front.cost: bytes``: quant and gguf studies ranked by the bytes their searched tensors store.

Bits change no parameter count, so a quant study's front over parameters is flat and its hypervolume 0; over bytes
it measures how far the search moves, and every held-out row carries the exact bytes the space costs.
"""

import json

import pytest

from paretopress.cli import main
from paretopress.job import JobSpec
from paretopress.run import run_job
from paretopress.store.store import Store
from tests.support import job_yaml

QUANT = {"kind": "quant", "bits": 4.0, "widths": [2, 3, 4], "group_size": 16, "builder": "rtn"}
GGUF = {"kind": "gguf", "bits": 5.0}
JOINT = {"kind": "joint", "depth": {"drop": 1}, "quant": {**QUANT, "bits": 4.5}}


def hypervolumes(db) -> list:
    with Store(db, readonly=True) as store:
        return [(h.value, h.objectives, h.reference) for h in store.hypervolumes(store.study("tiny").id)]


@pytest.mark.parametrize("space", [QUANT, GGUF, JOINT], ids=["quant", "gguf", "depth x quant"])
def test_a_bytes_front_has_a_hypervolume_and_the_spaces_bytes(space, tiny_model, text_files, tmp_path, capsys):
    changes = {"space": space, "strategy.generations": 2}
    by_params = run_job(JobSpec.model_validate(job_yaml(tiny_model, text_files, **changes)), tmp_path / "p.db",
                        executor="local")
    job = JobSpec.model_validate(job_yaml(tiny_model, text_files, **changes, front={"cost": "bytes"}))
    outcome = run_job(job, tmp_path / "b.db", executor="local")
    assert outcome.genomes == by_params.genomes  # the axis ranks the front; the search is the same

    flat, ranked = hypervolumes(tmp_path / "p.db"), hypervolumes(tmp_path / "b.db")
    assert [objectives for _, objectives, _ in ranked] == [["kl", "bytes_fraction"]] * 2
    assert all(value > 0 for value, _, _ in ranked)
    if space["kind"] != "joint":  # dropped blocks change the parameter count; bits alone do not
        assert all(value == 0 for value, _, _ in flat)

    for label, metrics in outcome.metrics.items():
        assert metrics["bytes"] == outcome.costs[label]["bytes"]
    capsys.readouterr()
    assert main(["front", "tiny", "--db", str(tmp_path / "b.db"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    costs = {outcome.candidates[label]: cost["bytes"] for label, cost in outcome.costs.items()}
    assert rows and all(row["bytes"] == costs[row["candidate"]] for row in rows)
    assert [row["bytes"] for row in rows] == sorted(row["bytes"] for row in rows)  # cheapest first
    assert main(["front", "tiny", "--db", str(tmp_path / "b.db")]) == 0
    assert "bytes" in capsys.readouterr().out.splitlines()[0]
