"""A stage scored together (shared prefixes) equals its candidates scored one by one, for every space kind."""

import copy

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from paretopress.evaluators.metrics import score
from paretopress.evaluators.samples import SampleSet
from paretopress.evaluators.teacher import compute_teacher
from paretopress.inputs.data import load_documents, pack_samples
from paretopress.inputs.models import load_tokenizer
from paretopress.job import JobSpec
from paretopress.run import build_space, run_job
from paretopress.search.operators import distinct_offspring
from paretopress.search.stage import StageForward, stage_jobs
from paretopress.search.strategies import Trial
from paretopress.search.worker import Worker
from paretopress.spaces.budget import TimeTable
from paretopress.spaces.depth import DepthSpace
from paretopress.spaces.genome import Genome
from tests.support import QUANT, SPARSITY, job_yaml, make_job

EVALUATORS = ("kl", "ppl", "params")
SPACES = {
    "depth blocks": {"kind": "depth", "drop": 2},
    "depth sub-layers": {"kind": "depth", "granularity": "sublayer", "drop": 3},
    "sparsity": SPARSITY,
    "quant": {**QUANT, "builder": "rtn"},
    "sparsity x quant": {"kind": "joint", "sparsity": {**SPARSITY, "builder": "magnitude"},
                         "quant": {**QUANT, "builder": "rtn"}},
    "depth x quant": {"kind": "joint", "depth": {"drop": 1}, "quant": {**QUANT, "builder": "rtn"}},
    "width": {"kind": "width", "speedup": 1.2, "channels": [1.0, 0.5, 0.25, 0.0], "calibration_samples": 8},
}


@pytest.fixture(scope="module")
def model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def samples(model, tiny_model, text_files):
    documents = load_documents({"path": "text", "data_files": [str(p) for p in text_files], "sample_by": "document"})
    tokens = pack_samples(documents.calibration, load_tokenizer(str(tiny_model)), 32, 6)
    return tokens, compute_teacher(model, tokens, 16, 4)


def one_by_one(space, model, genomes, samples):
    tokens, teacher = samples
    values = []
    for genome in genomes:
        with space.applied(model, genome) as applied:
            values.append(score(applied, tokens, teacher, EVALUATORS, 4))
    return values


def assert_equal(together, alone):
    for a, b in zip(together, alone, strict=True):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7) for k in a)


@pytest.mark.parametrize("kind", list(SPACES), ids=list(SPACES))
def test_a_stage_equals_its_candidates_one_by_one(kind, tiny_model, text_files, model, samples):
    space = build_space(JobSpec.model_validate(job_yaml(tiny_model, text_files, space=SPACES[kind])), model)
    rng = np.random.default_rng(0)
    if kind == "width":  # a time budget from made-up unit times: only the levels matter here
        seconds = tuple(tuple(1.0 - 0.2 * level for level in range(n)) for n in space.num_levels)
        space = space.timed(TimeTable(seconds, sum(unit[0] for unit in seconds) + 1.0, "synthetic")).at_speedup(1.2)
    parent = space.start() or space.random_genome(rng)
    genomes = [*distinct_offspring(parent, space, 6, rng), parent, parent]  # the parent twice: answered once
    stage = StageForward(model, space)
    assert_equal(stage.score(genomes, *samples, EVALUATORS, 4), one_by_one(space, model, genomes, samples))


def test_first_and_last_blocks_dropped_and_the_dense_genome(model, samples):
    space = DepthSpace(model, "block", 2)
    genomes = [Genome((1, 1, 0, 0, 0, 0)), Genome((0, 0, 0, 0, 1, 1)), Genome((1, 0, 0, 0, 0, 1)),
               Genome((0, 1, 0, 0, 1, 0)), space.dense()]
    stage = StageForward(model, space)
    assert_equal(stage.score(genomes, *samples, EVALUATORS, 4), one_by_one(space, model, genomes, samples))
    assert stage.branch_bytes > 0


def test_kept_streams_stay_within_their_bound(model, samples):
    """Depth first: at most one kept stream per branching depth, each one batch of hidden states."""
    space = DepthSpace(model, "sublayer", 3)
    rng = np.random.default_rng(1)
    genomes = [space.random_genome(rng) for _ in range(12)]
    stage = StageForward(model, space)
    stage.score(genomes, *samples, EVALUATORS, 4)
    tokens = samples[0]
    per_stream = 4 * tokens.shape[1] * model.config.hidden_size * 4  # batch x seq x hidden float32
    assert 0 < stage.branch_bytes <= model.config.num_hidden_layers * per_stream


def test_stage_jobs_keep_stages_apart_and_neighbours_together(model):
    space = DepthSpace(model, "block", 2)
    genomes = [Genome(g) for g in ((0, 0, 0, 0, 1, 1), (1, 1, 0, 0, 0, 0), (0, 0, 0, 1, 1, 0), (1, 0, 1, 0, 0, 0))]
    trials = [Trial(g, "calibration", (0, 1), ("kl",), "x") for g in genomes]
    trials.append(Trial(genomes[0], "calibration", (2, 3), ("kl",), "x"))
    jobs = stage_jobs(trials, space, parts=2)
    assert sorted(i for job in jobs for i in job) == list(range(5))
    assert [4] in jobs and all(len({trials[i].samples for i in job}) == 1 for job in jobs)
    assert {frozenset(job) for job in jobs if 4 not in job} == {frozenset({0, 2}), frozenset({1, 3})}


def test_a_study_with_a_sampled_head_reports_exact_held_out_values(tiny_model, text_files, tmp_path):
    """``evaluation.tail_samples`` changes the search's fitness only: the held-out report of a genome is the exact
    one, and a job without it keeps the study spec of stores written before it existed."""
    plain = make_job(tiny_model, text_files)
    assert "tail_samples" not in plain.on_device("cpu").study_spec()["evaluation"]
    sampled = plain.model_validate({**plain.model_dump(), "evaluation": {**plain.evaluation.model_dump(),
                                                                          "tail_samples": 64}})
    exact, estimated = (run_job(job, tmp_path / f"{i}.db", executor="local") for i, job in enumerate((plain, sampled)))
    assert estimated.metrics["dense"] == exact.metrics["dense"]
    for label, genome in estimated.genomes.items():
        twin = next((other for other, g in exact.genomes.items() if g == genome), None)
        if twin is not None:
            assert estimated.metrics[label] == pytest.approx(exact.metrics[twin], rel=1e-6)


@pytest.mark.parametrize("kind", list(SPACES), ids=list(SPACES))
def test_bfloat16_workers_score_close_to_float32(kind, tiny_model, text_files, model, samples):
    """``evaluation.dtype: bfloat16``: every space's levels follow the model into bfloat16, and a stage's values stay
    near the float32 ones (the teacher is float32 in both)."""
    space = build_space(JobSpec.model_validate(job_yaml(tiny_model, text_files, space=SPACES[kind])), model)
    if kind == "width":
        seconds = tuple(tuple(1.0 - 0.2 * level for level in range(n)) for n in space.num_levels)
        space = space.timed(TimeTable(seconds, sum(unit[0] for unit in seconds) + 1.0, "synthetic")).at_speedup(1.2)
    rng = np.random.default_rng(2)
    genomes = [*distinct_offspring(space.start() or space.random_genome(rng), space, 4, rng)]
    tokens, teacher = samples
    pools = {"calibration": SampleSet(tokens, teacher)}
    trials = [Trial(g, "calibration", tuple(range(len(tokens))), ("kl", "ppl"), "x") for g in genomes]
    values = {dtype: [r.values for r in Worker(lambda: copy.deepcopy(model), space, pools, 4, 1, dtype=dtype)
                      .evaluate(trials)] for dtype in ("float32", "bfloat16")}
    for half, full in zip(values["bfloat16"], values["float32"], strict=True):
        assert half["kl"] == pytest.approx(full["kl"], rel=0.1, abs=0.02)
        assert half["ppl"] == pytest.approx(full["ppl"], rel=0.05)
