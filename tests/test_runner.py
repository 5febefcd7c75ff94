"""Whole studies on a tiny model: Ray workers, the store, resume after an interruption, export."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretopress.report.export import export_candidate
from paretopress.report.front import study_front
from paretopress.run import run_job
from paretopress.store.store import Store
from tests.support import InterruptAfter, make_job


def test_ray_study_end_to_end_and_export(ray_cluster, tiny_model, text_files, tmp_path):
    job = make_job(tiny_model, text_files)
    db = tmp_path / "s.db"
    outcome = run_job(job, db)
    assert outcome.metrics["dense"]["kl"] == pytest.approx(0, abs=1e-6)
    assert outcome.metrics["evopress"]["kl"] <= outcome.metrics["initial"]["kl"] + 1e-9
    with Store(db, readonly=True) as store:
        study = store.study("tiny")
        assert study.status == "completed"
        workers = {e.worker for e in store.evaluations(study.id)}
        assert len(workers) == 2  # both Ray actors evaluated
        assert len({c.genome_key for c in store.candidates(study.id)}) == len(store.candidates(study.id))
        front = study_front(store, study.id)
    assert [row["origin"] for row in front][-1] == "dense" and len(front) >= 2
    best = next(r for r in front if r["origin"] != "dense")

    report = export_candidate(db, "tiny", str(best["candidate"]), tmp_path / "export")
    assert report.relative_difference("ppl") < 1e-3 and report.relative_difference("kl") < 1e-3
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert reloaded.config.num_hidden_layers == 6 - 2
    assert sum(p.numel() for p in reloaded.parameters()) == best["params"]


def test_interrupted_and_resumed_equals_uninterrupted(tiny_model, text_files, tmp_path):
    job = make_job(tiny_model, text_files)
    straight = run_job(job, tmp_path / "a.db", executor="local")
    for limit in (3, 9):  # interrupt twice, at different points, then finish
        with pytest.raises(KeyboardInterrupt):
            run_job(job, tmp_path / "b.db", executor="local", wrap_executor=lambda e, n=limit: InterruptAfter(e, n))
    with Store(tmp_path / "b.db", readonly=True) as store:
        assert store.study("tiny").status == "interrupted"
    resumed = run_job(job, tmp_path / "b.db", executor="local")
    assert resumed.resumed and resumed.reused >= 9
    assert resumed.genomes == straight.genomes
    assert resumed.metrics == straight.metrics
    with Store(tmp_path / "a.db", readonly=True) as a, Store(tmp_path / "b.db", readonly=True) as b:
        assert [c.genome for c in a.candidates(1)] == [c.genome for c in b.candidates(1)]
        assert len(a.evaluations(1)) == len(b.evaluations(1))  # nothing lost, nothing duplicated


def test_sublayer_study_exports_zeroed_sublayers(tiny_model, text_files, tmp_path):
    job = make_job(tiny_model, text_files, **{"space.granularity": "sublayer", "space.drop": 3, "name": "sub"})
    outcome = run_job(job, tmp_path / "s.db", executor="local")
    report = export_candidate(tmp_path / "s.db", "sub", "best", tmp_path / "export")
    assert math.isclose(report.measured["ppl"], outcome.metrics["evopress"]["ppl"], rel_tol=1e-3)
    levels = outcome.genomes["evopress"].levels
    both_dropped = sum(levels[2 * b] and levels[2 * b + 1] for b in range(6))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert reloaded.config.num_hidden_layers == 6 - both_dropped
    zeroed = [part for layer in reloaded.model.layers for part in (layer.self_attn, layer.mlp)
              if not any(torch.any(p) for p in part.parameters())]
    assert len(zeroed) == 3 - 2 * both_dropped
