"""One-shot baselines on the tiny model: exact budgets, determinism, known answers, and their place in a study."""

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from paretopress.api import open_store
from paretopress.cli import main
from paretopress.job import JobSpec
from paretopress.run import build_space, run_job
from paretopress.search.baselines.base import Calibration
from paretopress.search.baselines.depth import FinerCut
from paretopress.search.baselines.linear import layer_sparsity, outlier_ratio
from paretopress.search.baselines.spdy import knapsack, solve
from paretopress.spaces.depth import DepthSpace
from paretopress.store.store import Store
from tests.support import QUANT, SPARSITY, baseline, job_yaml, make_job, refused, synthetic_documents, write


@pytest.fixture(scope="module")
def model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def hollow(tiny_model):
    """The tiny model with blocks 2 and 3 made identities (attention and MLP outputs zero)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        for block in (2, 3):
            model.model.layers[block].self_attn.o_proj.weight.zero_()
            model.model.layers[block].mlp.down_proj.weight.zero_()
    return model


def calibration(model, samples: int = 4) -> Calibration:
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, model.config.vocab_size, (samples, 24)))
    return Calibration(model, tokens, batch_size=2)


def propose(method: str, spaces, model, **settings_):
    return baseline(method, **settings_).propose(spaces, calibration(model))


@pytest.mark.parametrize("method", ["shortgpt", "angular", "finercut", "spdy"])
def test_depth_baselines_meet_every_budget_and_repeat(model, method):
    space = DepthSpace(model, "block", 3)
    spaces = [space.at_budget(d) for d in (1, 2, 3)]
    first, again = propose(method, spaces, model), propose(method, spaces, model)
    assert first == again
    assert [g.levels.count(1) for g in first] == [1, 2, 3]
    assert all(s.is_feasible(g) for s, g in zip(spaces, first, strict=True))


@pytest.mark.parametrize("method", ["shortgpt", "finercut", "spdy"])
def test_depth_baselines_drop_identity_blocks_first(hollow, method):
    space = DepthSpace(hollow, "block", 2)
    assert propose(method, [space], hollow)[0].levels == (0, 0, 1, 1, 0, 0)


def test_angular_finds_the_identity_window(hollow):
    space = DepthSpace(hollow, "block", 2)
    assert propose("angular", [space], hollow)[0].levels == (0, 0, 1, 1, 0, 0)


def test_finercut_removes_an_identity_sublayer_first(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        model.model.layers[4].mlp.down_proj.weight.zero_()
    space = DepthSpace(model, "sublayer", 3)
    path = baseline("finercut").path(space, calibration(model), 3)
    assert path[0] == space.units.index("model.layers.4.mlp")
    assert len(set(path)) == 3


def test_finercut_cost_is_one_pass_per_removal_tried(model):
    calib = calibration(model)
    baseline("finercut").propose([DepthSpace(model, "block", 2)], calib)
    assert calib.passes == 1 + 6 + 5  # the dense reference, then every remaining block at each of two steps


def test_angular_refuses_sublayers_before_any_study(tiny_model, text_files, tmp_path, capsys):
    """Which baselines apply to a space is part of the job's validation: nothing is written."""
    bad = job_yaml(tiny_model, text_files, **{"space.granularity": "sublayer"}, baselines=[{"method": "angular"}])
    refused(job_yaml(tiny_model, text_files), bad, "baselines.0.method: angular drops windows of whole blocks",
            tmp_path, capsys)


def test_owl_outlier_ratio_and_layer_sparsity_known_answers():
    block = [torch.tensor([[1.0, 1.0], [1.0, 1.0]]), torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 91.0])]
    assert outlier_ratio(block, 5.0) == pytest.approx(0.1)  # mean 10, one score of ten above 50
    assert outlier_ratio(block, 10.0) == 0.0
    assert layer_sparsity([0.1, 0.0, 0.05], 0.5, 0.08) == pytest.approx([0.42, 0.58, 0.5])
    assert layer_sparsity([0.2, 0.2], 0.7, 0.08) == pytest.approx([0.7, 0.7])


@pytest.mark.parametrize("method", ["uniform", "owl", "spdy"])
def test_sparsity_baselines_meet_the_exact_budget(tiny_model, text_files, model, method):
    job = JobSpec.model_validate(job_yaml(tiny_model, text_files, space={**SPARSITY, "levels": 6}))
    space = build_space(job, model)
    genome = propose(method, [space], model)[0]
    assert space.is_feasible(genome)
    assert space.cost(genome)["params"] == space.cost(space.uniform())["params"]
    assert propose(method, [space], model)[0] == genome


@pytest.mark.parametrize("method", ["uniform", "spdy"])
def test_quant_baselines_meet_the_exact_budget(tiny_model, text_files, model, method):
    job = JobSpec.model_validate(job_yaml(tiny_model, text_files, space=QUANT))
    space = build_space(job, model)
    genome = propose(method, [space], model)[0]
    assert space.is_feasible(genome)
    assert space.cost(genome)["bits"] == pytest.approx(space.cost(space.uniform())["bits"])


def test_owl_follows_the_block_ratios(tiny_model, text_files, model):
    """On a fine grid, every unit of a block OWL prunes more is at least as sparse as the same unit elsewhere."""
    job = JobSpec.model_validate(job_yaml(tiny_model, text_files, space={**SPARSITY, "levels": 20}))
    space = build_space(job, model)
    owl = baseline("owl", m=2.0, **{"lambda": 0.2})
    sparsity = owl.block_sparsity(space, calibration(model))
    genome = owl.propose([space], calibration(model))[0]
    per_block = np.array(genome.levels).reshape(6, -1).sum(axis=1)
    assert np.mean(sparsity) == pytest.approx(0.5)
    assert per_block[int(np.argmax(sparsity))] >= per_block[int(np.argmin(sparsity))]


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_exact_knapsack_equals_brute_force(data):
    units = data.draw(st.integers(1, 4))
    levels = [data.draw(st.integers(1, 4)) for _ in range(units)]
    errors = [[data.draw(st.floats(0, 10)) for _ in range(n)] for n in levels]
    target = data.draw(st.integers(0, sum(levels) - units))
    feasible = [c for c in itertools.product(*[range(n) for n in levels]) if sum(c) == target]
    chosen = solve(errors, [list(range(n)) for n in levels], target, exact=True)
    assert sum(chosen) == target
    best = min(sum(errors[u][lv] for u, lv in enumerate(c)) for c in feasible)
    assert sum(errors[u][lv] for u, lv in enumerate(chosen)) == pytest.approx(best)


def test_knapsack_stays_within_a_real_valued_budget():
    errors = [[5.0, 1.0, 0.0], [4.0, 2.0, 0.0], [9.0, 0.5, 0.0]]
    costs = [[0.0, 1.5, 3.0], [0.0, 1.0, 2.5], [0.0, 2.0, 4.0]]
    levels = knapsack(errors, costs, budget=4.5)
    assert sum(costs[u][lv] for u, lv in enumerate(levels)) <= 4.5
    assert levels == [1, 0, 1]  # error 5.5: the best of every combination within 4.5


def test_study_with_baselines_and_a_warm_start(tiny_model, text_files, tmp_path):
    job = JobSpec.model_validate(job_yaml(
        tiny_model, text_files, **{"space.drop": [1, 2], "strategy.warm_start": "finercut"},
        baselines=[{"method": "shortgpt", "samples": 4}, {"method": "spdy", "samples": 4}],
    ))
    db = tmp_path / "s.db"
    outcome = run_job(job, db, executor="local")
    for drop in (1, 2):
        assert outcome.genomes[f"initial drop={drop}"] == outcome.genomes[f"finercut drop={drop}"]
        for method in ("shortgpt", "spdy", "finercut"):
            assert outcome.genomes[f"{method} drop={drop}"].levels.count(1) == drop
            assert f"{method} drop={drop}" in outcome.metrics
    assert outcome.best.split()[0] in ("initial", "evopress")  # what the search found, not a baseline
    with Store(db, readonly=True) as store:
        runs = store.baseline_runs(outcome.study_id)
        candidates = {c.id: c for c in store.candidates(outcome.study_id)}
    assert {(r.method, r.passes) for r in runs} == {("shortgpt", 1), ("spdy", 1 + 6), ("finercut", 1 + 6 + 5)}
    assert all(r.seconds > 0 for r in runs) and len(runs) == 6
    for run in runs:  # a genome two methods propose is one candidate, named after the first; each run points to it
        assert candidates[run.candidate_id].genome_key == outcome.genomes[run.label].key
    assert candidates[runs[0].candidate_id].origin == "shortgpt drop=1"

    again = run_job(job, db, executor="local")
    assert again.evaluated == 0 and again.genomes == outcome.genomes
    with Store(db, readonly=True) as store:
        assert len(store.baseline_runs(outcome.study_id)) == 6  # read back, not recomputed


def test_a_warm_started_study_exports(tiny_model, text_files, tmp_path, capsys):
    """The stored spec of a warm start holds the baseline's settings; export reads it back (it failed with a
    traceback before: the settings dict did not validate as a method name)."""
    job = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files, **{"strategy.warm_start": "shortgpt"},
                                                baselines=[{"method": "shortgpt", "samples": 4}]))
    db = tmp_path / "s.db"
    assert main(["run", str(job), "--db", str(db), "--executor", "local"]) == 0
    with Store(db, readonly=True) as store:
        assert store.study("tiny").spec["strategy"]["warm_start"] == {"method": "shortgpt", "samples": 4}
    capsys.readouterr()
    assert main(["export", "tiny", "--db", str(db), "--candidate", "best", "--out", str(tmp_path / "out")]) == 0
    assert "relative difference" in capsys.readouterr().out
    config = json.loads((tmp_path / "out" / "paretopress.json").read_text())
    assert config["metrics"]["export"]["kl"] == pytest.approx(config["metrics"]["store"]["kl"], rel=1e-4)


def test_baselines_alone_from_the_cli(tiny_model, text_files, tmp_path, capsys):
    job = write(tmp_path / "job.yaml", job_yaml(
        tiny_model, text_files, space={**SPARSITY, "levels": 6},
        baselines=[{"method": "uniform"}, {"method": "owl", "samples": 4, "lambda": 0.1}]))
    db = tmp_path / "s.db"
    assert main(["baseline", str(job), "--db", str(db), "--executor", "local"]) == 0
    table = capsys.readouterr().out
    assert "owl" in table and "uniform" in table and "dense" in table
    with open_store(db) as view:
        frame = view.baselines("tiny")
    assert sorted(frame["method"]) == ["owl", "spdy", "uniform"]  # spdy: a cheap baseline the search seeds with
    assert (frame.set_index("method")["passes"][["uniform", "owl"]] == [0, 1]).all()
    assert frame["kl"].notna().all() and frame["seconds"].ge(0).all()
    with Store(db, readonly=True) as store:
        study = store.study("tiny")
        assert not [c for c in store.candidates(study.id) if c.origin in ("initial", "evopress")]  # no search ran


def test_baseline_command_needs_baselines(tiny_model, text_files, tmp_path, capsys):
    job = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files, **{"strategy.seeds": None}))
    assert main(["baseline", str(job), "--db", str(tmp_path / "s.db")]) == 2
    assert "names no baselines" in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_a_search_starts_from_the_best_of_its_seeds(tiny_model, text_files, tmp_path):
    """By default EvoPress screens the space's cheap baselines and random genomes; the winner of the last screening
    stage is the first parent, and the seeds' settings are part of the study."""
    db = tmp_path / "s.db"
    run_job(make_job(tiny_model, text_files, **{"strategy.seeds": {"random": 3}}), db, executor="local")
    with Store(db, readonly=True) as store:
        study = store.study("tiny")
        assert [b["method"] for b in study.spec["strategy"]["seeds"]["baselines"]] == ["shortgpt", "angular", "spdy"]
        candidates = {c.id: c for c in store.candidates(study.id)}
        seeds = [e for e in store.evaluations(study.id) if candidates[e.candidate_id].generation is None
                 and e.pool == "calibration"]
        last = max(len(e.samples) for e in seeds)
        screened = min((e for e in seeds if len(e.samples) == last), key=lambda e: e.id).sample_key
        finalists = {candidates[e.candidate_id].genome: e.value for e in seeds if e.sample_key == screened}
        first = next(c for c in candidates.values() if c.generation == 0)
    starts = {c.genome for c in candidates.values() if c.origin in ("shortgpt", "angular", "spdy")}
    assert starts and starts <= set(finalists)  # every baseline's genome meets the random survivors at the end
    assert len(finalists) == len(starts) + 2  # the first stage keeps 2 of the 3 random genomes
    parent = next(c.genome for c in candidates.values() if c.id == first.parent_id)
    assert parent == min(finalists, key=finalists.get)


def test_every_study_counts_the_tokens_it_forwarded(tiny_model, text_files, tmp_path, capsys):
    db = tmp_path / "s.db"
    assert main(["run", str(write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files))), "--db", str(db),
                 "--executor", "local"]) == 0
    run_output = capsys.readouterr().out
    with Store(db, readonly=True) as store:
        study = store.study("tiny")
        evaluations = store.evaluations(study.id)
        runs = {r.method: r for r in store.baseline_runs(study.id)}
    assert set(runs) == {"shortgpt", "angular", "spdy"}  # the cheap depth baselines the search seeds with
    with open_store(db) as view:
        tokens = view.tokens("tiny")
        assert view.studies()["tokens"].tolist() == [tokens["total"]]
    assert tokens["candidates"] == sum(len(e.samples) * 32 for e in evaluations)
    assert tokens["baselines"] == sum(r.passes * r.settings["samples"] * 32 for r in runs.values()) > 0
    assert tokens["teacher"] == (8 + 4) * 32
    assert tokens["total"] == tokens["candidates"] + tokens["baselines"] + tokens["teacher"]
    assert f"{tokens['total']:,} tokens forwarded" in run_output and "spdy" in run_output
    assert main(["front", "tiny", "--db", str(db)]) == 0
    assert f"{tokens['total']:,} tokens forwarded" in capsys.readouterr().out


def test_final_genomes_are_confirmed_on_another_text_at_another_length(tiny_model, text_files, tmp_path, capsys,
                                                                       caplog):
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"body": doc}) + "\n" for doc in synthetic_documents(6, 300, seed=9)))
    job = job_yaml(tiny_model, text_files, **{"evaluation.heldout_data": {"path": "json", "data_files": "other.jsonl",
                                                                         "text_field": "body"},
                                            "evaluation.heldout_seq_len": 48})
    db = tmp_path / "s.db"
    assert main(["run", str(write(tmp_path / "job.yaml", job)), "--db", str(db), "--executor", "local"]) == 0
    assert "heldout_data kl" in capsys.readouterr().out
    with Store(db, readonly=True) as store:
        study = store.study("tiny")
        confirmed = store.evaluations(study.id, "confirmation")
        heldout = store.evaluations(study.id, "heldout")
    assert {e.candidate_id for e in confirmed} == {e.candidate_id for e in heldout}  # every reported genome
    assert {e.tokens for e in confirmed} == {4 * 48} and {e.tokens for e in heldout} == {4 * 32}
    with open_store(db) as view:
        frame = view.candidates("tiny")
    reported = frame[frame["kl"].notna()]
    assert reported["confirmation_kl"].notna().all() and (reported["confirmation_kl"] != reported["kl"]).any()
    with caplog.at_level("INFO", logger="paretopress.inputs.pools"):  # the export reads the run's cached pools
        assert main(["export", "tiny", "--db", str(db), "--candidate", "best", "--out", str(tmp_path / "out")]) == 0
    assert not [m for m in caplog.messages if "computing the dense model's outputs" in m]


def test_finercut_says_what_it_will_cost_before_it_starts(tiny_model, caplog):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    space = DepthSpace(model, "block", drop=3)
    calibration = Calibration(model, torch.randint(0, 100, (4, 16)), 4)
    with caplog.at_level("INFO", logger="paretopress.search.baselines.depth"):
        FinerCut().propose([space], calibration)
    announced = caplog.messages[0]
    assert announced == (f"finercut: 3 removals will cost {calibration.passes} calibration passes over 64 tokens "
                         f"({calibration.passes * 64:,} tokens in all)")
