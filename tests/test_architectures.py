"""Every common architecture x every space kind x the export: it works, or it is refused before any work.

Works: the space builds (with its level database), genomes at the budget are applied and the compressed model gives
finite logits of the right shape (and the model is dense again after), a selection stage scores them as they score
alone (shared prefixes, the search's path), and the exported checkpoint reloads with transformers and gives the
logits and non-zero parameters of the in-memory candidate. Refused: one line (a ``UserError``) naming the space and
the architecture, raised before any level is built. ``REFUSED`` says which; the README's table comes from this module.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from paretopress.evaluators.metrics import score
from paretopress.evaluators.teacher import compute_teacher
from paretopress.inputs.models import quiet_transformers
from paretopress.job import JobSpec
from paretopress.kernel.errors import UserError
from paretopress.kernel.params import count_nonzero_parameters, count_parameters
from paretopress.report.export import export_candidate
from paretopress.report.formats.transformers import save_checkpoint
from paretopress.run import build_space, run_job
from paretopress.search.operators import distinct_offspring
from paretopress.search.stage import StageForward
from paretopress.spaces.budget import TimeTable
from paretopress.spaces.sparsity import SparsitySpace
from tests.support import TINY_ARCHITECTURES, job_yaml, make_tiny_architecture, write

SPACES = {
    "depth blocks": {"kind": "depth", "drop": 1},
    "depth sub-layers": {"kind": "depth", "granularity": "sublayer", "drop": 3},
    "sparsity": {"kind": "sparsity", "sparsity": 0.5, "builder": "sparsegpt", "levels": 2, "calibration_samples": 4},
    "sparsity tied": {"kind": "sparsity", "sparsity": 0.5, "builder": "wanda", "levels": 2, "tie": True,
                      "calibration_samples": 4},
    "quant": {"kind": "quant", "bits": 4.0, "widths": [2, 3, 4], "group_size": 16, "builder": "gptq",
              "calibration_samples": 4},
    "gguf": {"kind": "gguf", "bits": 5.0},  # down_proj's 256-wide rows take K-quants, the others legacy types
    "width": {"kind": "width", "speedup": 1.3, "channels": [1.0, 0.5, 0.25, 0.0], "calibration_samples": 4},
    "joint": {"kind": "joint", "depth": {"drop": 1},
              "sparsity": {"sparsity": 0.5, "builder": "magnitude", "levels": 2},
              "quant": {"bits": 4.0, "widths": [2, 3, 4], "group_size": 16, "builder": "rtn"}},
}
PHYSICAL = ("depth blocks", "width")  # spaces whose exports are smaller tensors, not zeroed ones: params on disk

# what is refused, and the reason its one line gives; every other pair must work
REFUSED = {
    ("Phi3ForCausalLM", "width"): "fuses q/k/v into qkv_proj and gate/up into gate_up_proj, which this space "
                                  "cannot cut",
    ("GPT2LMHeadModel", "width"): "fuses q/k/v into c_attn, which this space cannot cut",
}
EVALUATORS = ("kl", "ppl")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, text_files):
    """Each architecture's tiny checkpoint folder, written on first use."""
    quiet_transformers()
    folders = {}

    def folder(architecture: str):
        if architecture not in folders:
            folders[architecture] = make_tiny_architecture(architecture, tmp_path_factory.mktemp(architecture),
                                                           text_files)
        return folders[architecture]
    return folder


def load(folder, remote: bool = False):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=remote).eval()


def logits(model, tokens):
    with torch.inference_mode():
        return model(input_ids=tokens, use_cache=False).logits


def synthetic_times(space) -> TimeTable:
    """Unit times falling with the width (a dropped sub-layer 1 us); the rest of the model takes 30%."""
    rng = np.random.default_rng(0)
    seconds = tuple((*sorted(rng.uniform(1e-4, 1e-3, n - 1), reverse=True), 1e-6) for n in space.num_levels)
    return TimeTable(seconds, sum(s[0] for s in seconds) / 0.7, "synthetic")


def at_budget(name: str, space):
    """The space under its budget (width: a time budget from made-up unit times), and genomes within it."""
    rng = np.random.default_rng(1)
    if name == "width":
        space = space.timed(synthetic_times(space)).at_speedup(1.3)
        found = [space.uniform(), space.random_genome(rng)]  # a stock checkpoint, and one with per-layer widths
    elif name == "depth blocks":
        found = [space.dense().with_levels({0: 1}), space.random_genome(rng)]  # block 0 gone: every layer moves up
    else:
        found = [space.random_genome(rng), space.random_genome(rng)]
    assert all(space.is_feasible(genome) for genome in found)
    return space, found


class NoLevels:
    """Inputs for a space that must be refused: building a level database or a latency table is a failure."""

    def __init__(self, model) -> None:
        self.model = model

    def attach_levels(self, source, samples: int) -> None:
        raise AssertionError("levels were built before the space was refused")

    def time_table(self, space, latency):
        raise AssertionError("a latency table was measured before the space was refused")


@pytest.mark.parametrize("name", list(SPACES))
@pytest.mark.parametrize("architecture", list(TINY_ARCHITECTURES))
def test_space_and_export_work_or_are_refused_before_any_work(architecture, name, checkpoints, text_files,
                                                              tmp_path):
    folder = checkpoints(architecture)
    job = JobSpec.model_validate(job_yaml(folder, text_files, space=SPACES[name]))
    model = load(folder)
    if (architecture, name) in REFUSED:
        with pytest.raises(UserError) as refusal:
            job.space.build(NoLevels(model))
        line = str(refusal.value)
        assert "\n" not in line and line.startswith(f"{job.space.kind} space: {architecture} ")
        assert REFUSED[architecture, name] in line
        return
    space, genomes = at_budget(name, build_space(job, model))
    tokens = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    dense = logits(model, tokens)
    for index, genome in enumerate(genomes):
        with space.applied(model, genome) as candidate:
            expected, nonzero = logits(candidate, tokens), count_nonzero_parameters(candidate)
        assert expected.shape == dense.shape and torch.isfinite(expected).all()
        assert not torch.equal(expected, dense)
        assert torch.equal(logits(model, tokens), dense)  # undone
        out = tmp_path / f"export{index}"
        remote = save_checkpoint(space.materialise(load(folder), genome), out)
        assert remote == (name == "width" and index == 1)  # width: a stock checkpoint, then the per-layer loader
        reloaded = load(out, remote)
        assert type(reloaded).__name__.endswith(architecture)
        torch.testing.assert_close(logits(reloaded, tokens), expected, rtol=1e-5, atol=1e-5)
        assert count_nonzero_parameters(reloaded) == nonzero  # the params a study stores and its export re-measures
        if name in PHYSICAL:
            assert count_parameters(reloaded) == space.cost(genome)["params"]
    stage = [*genomes, *distinct_offspring(genomes[1], space, 4, np.random.default_rng(2))]
    teacher = compute_teacher(model, tokens, 16, 2)
    alone = []
    for genome in stage:
        with space.applied(model, genome) as candidate:
            alone.append(score(candidate, tokens, teacher, EVALUATORS, 2))
    together = StageForward(model, space).score(stage, tokens, teacher, EVALUATORS, 2)
    for a, b in zip(together, alone, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7)


def test_gpt2_conv1d_projections_are_units_as_linear_layers_hold_them(checkpoints):
    """Conv1D stores [in, out]; the space sees [out, in] like every nn.Linear, so X^T X matches its columns."""
    model = load(checkpoints("GPT2LMHeadModel"))
    space = SparsitySpace(model, 0.5, "magnitude", 2)
    shapes = dict(zip(space.units, space.shapes, strict=True))
    assert shapes["transformer.h.0.attn.c_attn"] == (192, 64)
    assert shapes["transformer.h.0.mlp.c_fc"] == (256, 64) and shapes["transformer.h.0.mlp.c_proj"] == (64, 256)
    index = space.units.index("transformer.h.0.mlp.c_fc")
    assert torch.equal(space.dense_weight(model, index), model.transformer.h[0].mlp.c_fc.weight.T)


@pytest.mark.parametrize(("architecture", "name"), [("Gemma3ForCausalLM", "depth sub-layers"),
                                                    ("GPT2LMHeadModel", "quant")])
def test_a_study_and_its_export_match_the_store(architecture, name, checkpoints, text_files, tmp_path):
    """The whole path once on two architectures unlike Llama: search, store, ``paretopress export``, re-measured."""
    job = JobSpec.model_validate(job_yaml(checkpoints(architecture), text_files, space=SPACES[name],
                                          **{"strategy.generations": 2}))
    run_job(job, tmp_path / "s.db", executor="local")
    report = export_candidate(tmp_path / "s.db", "tiny", "best", tmp_path / "export")
    assert report.relative_difference("ppl") < 1e-3 and report.relative_difference("kl") < 1e-3
    assert report.measured["params"] == report.stored["params"]


def test_a_refused_space_is_one_line_and_exit_2_from_the_command_line(checkpoints, text_files, tmp_path, capsys):
    from paretopress.cli import main

    job = job_yaml(checkpoints("Phi3ForCausalLM"), text_files, space=SPACES["width"])
    db = tmp_path / "s.db"
    assert main(["run", str(write(tmp_path / "phi3.yaml", job)), "--db", str(db), "--executor", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paretopress: error: width space: Phi3ForCausalLM fuses q/k/v into qkv_proj")
    assert "\n" not in err and not db.exists()
