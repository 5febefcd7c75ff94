"""Sparsity and quant spaces on the tiny model: exact budgets, the level database, assembly by reference, export."""

import copy
import pickle
from functools import partial

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from paretopress.inputs.data import load_documents
from paretopress.inputs.levels import check_database, database_key
from paretopress.job import JobSpec
from paretopress.kernel.errors import UserError
from paretopress.kernel.params import count_nonzero_parameters
from paretopress.report.export import export_candidate
from paretopress.run import build_space, run_job
from paretopress.search.operators import level_switch, mutate
from paretopress.spaces import levels
from paretopress.spaces.database import LevelDatabase
from paretopress.spaces.quant import QuantSpace
from paretopress.spaces.sparsity import SparsitySpace
from tests.support import QUANT, SPARSITY, job_yaml, refused


def job(tiny_model, text_files, space, **changes) -> JobSpec:
    return JobSpec.model_validate(job_yaml(tiny_model, text_files, space=space, **changes))


@pytest.fixture(scope="module")
def model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def budget_spaces(model):
    sparsity = {(s, side): SparsitySpace(model, s, "magnitude", side) for s in (0.2, 0.5, 0.7) for side in (1, 4)}
    quant = {(b, w): QuantSpace(model, b, list(w), "rtn", 32) for b in (3.0, 3.6, 4.5) for w in ((2, 3, 4), (2, 4, 6))}
    return {**sparsity, **quant}


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 11), steps=st.integers(1, 15))
def test_every_genome_of_a_space_has_the_same_exact_budget(budget_spaces, seed, index, steps):
    """Random feasible genomes and chains of level switches never move the average sparsity or bits by one unit."""
    space = list(budget_spaces.values())[index]
    rng = np.random.default_rng(seed)
    metric = "sparsity" if isinstance(space, SparsitySpace) else "bits"
    uniform = space.cost(space.uniform())
    genome = space.random_genome(rng)
    for _ in range(steps):
        assert space.is_feasible(genome)
        assert space.cost(genome) == uniform  # exact: integer counts of weights and bits, same division
        genome = level_switch(genome, space, rng)
    if metric == "sparsity":
        assert abs(uniform["sparsity"] - space.sparsity) < 1e-4
    else:
        assert uniform["bits"] <= space.bits and space.bits - uniform["bits"] < 0.1


@pytest.fixture(scope="module")
def limited_quant_spaces(model):
    """Bit-widths whose level steps cost unequal amounts (uneven, or 16 = unquantized): a limit, not switch groups."""
    budgets = ((3.0, (2, 3, 4, 8)), (5.0, (2, 4, 16)), (9.0, (4, 16)))
    return [QuantSpace(model, bits, list(widths), "rtn", 32) for bits, widths in budgets]


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 2), steps=st.integers(1, 15))
def test_uneven_bit_widths_keep_every_genome_within_the_budget_and_on_its_boundary(limited_quant_spaces, seed,
                                                                                   index, steps):
    space = limited_quant_spaces[index]
    rng = np.random.default_rng(seed)
    assert not space.exact and space.switch_groups == ()
    genomes = [space.uniform(), space.random_genome(rng)]
    for _ in range(steps):
        genomes.append(mutate(genomes[-1], space, rng))
    for genome in genomes:
        assert space.is_feasible(genome) and space.cost(genome)["bits"] <= space.bits
        assert space.cost(genome)["bits"] == sum(
            space.unit_bits(i, level) for i, level in enumerate(genome.levels)) / space.weights
    for genome in genomes[1:]:  # repaired: no unit can take the next wider bit-width and stay within the budget
        for i, level in enumerate(genome.levels):
            if level:
                wider = list(genome.levels)
                wider[i] -= 1
                assert not space.limit.fits(wider)


def test_unquantized_level_is_the_dense_weight_at_16_bits_per_weight(limited_quant_spaces, model):
    space = limited_quant_spaces[2]  # widths 16 and 4
    assert space.widths == (16, 4)
    dense = space.dense_weight(model, 0).detach()
    assert space.level_weight(0, 0, dense) is dense
    assert space.unit_bits(0, 0) == 16 * space.numels[0]
    assert space.cost(space.dense())["bits"] == 16


def test_sparsity_uniform_genome_prunes_every_layer_to_the_budget(budget_spaces):
    space = budget_spaces[(0.5, 4)]
    genome = space.uniform()
    assert space.is_feasible(genome) and max(space.num_levels) == 9 and min(space.num_levels) < 9
    assert all(r[level] == round(0.5 * n) for r, n, level in zip(space.removed, space.numels, genome.levels,
                                                                   strict=True))


@pytest.mark.parametrize("builder", ["magnitude", "wanda", "sparsegpt"])
def test_sparsity_candidates_have_exactly_the_nonzeros_the_space_says(model, tiny_model, text_files, builder):
    space = build_space(job(tiny_model, text_files, {**SPARSITY, "builder": builder}), model)
    pointers = {name: p.data_ptr() for name, p in model.named_parameters()}
    tokens = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.inference_mode():
        before = model(input_ids=tokens).logits
    genome = level_switch(space.uniform(), space, np.random.default_rng(0))
    with space.applied(model, genome) as candidate:
        assert count_nonzero_parameters(candidate) == space.cost(genome)["params"]
        first = [candidate.get_submodule(u).weight for u in space.units]
    with space.applied(model, genome) as candidate:  # assembled again: the same tensors, nothing recomputed
        assert all(a.data_ptr() == candidate.get_submodule(u).weight.data_ptr()
                   for a, u in zip(first, space.units, strict=True))
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == pointers
    with torch.inference_mode():
        assert torch.equal(model(input_ids=tokens).logits, before)


def test_sparsegpt_levels_are_references_into_the_memory_mapped_database(model, tiny_model, text_files):
    space = build_space(job(tiny_model, text_files, {**SPARSITY, "builder": "sparsegpt"}), model)
    genome = space.uniform()
    with space.applied(model, genome) as candidate:
        unit = space.units[0]
        stored = space.database.tensor(f"{unit}.{genome.levels[0]}")
        assert candidate.get_submodule(unit).weight.data_ptr() == stored.data_ptr()


def test_quant_levels_are_packed_codes_and_candidates_use_few_values(model, tiny_model, text_files):
    space = build_space(job(tiny_model, text_files, QUANT), model)
    unit, (rows, cols) = space.units[0], space.shapes[0]
    for width in space.widths:
        assert space.database.tensor(f"{unit}.{width}.codes").numel() == -(-rows * cols * width // 8)
    genome = space.uniform()
    with space.applied(model, genome) as candidate:
        for i, unit in enumerate(space.units):
            weight = candidate.get_submodule(unit).weight
            width = space.widths[genome.levels[i]]
            assert all(torch.unique(weight[r, :16]).numel() <= 2**width for r in range(3))


def test_the_space_travels_to_workers_without_tensors(model, tiny_model, text_files):
    space = build_space(job(tiny_model, text_files, SPARSITY), model)
    with space.applied(model, space.uniform()):
        pass  # fills this process's cache
    payload = pickle.dumps(space)
    assert len(payload) < 20_000
    clone = pickle.loads(payload)
    with clone.applied(model, space.uniform()) as candidate:
        assert count_nonzero_parameters(candidate) == space.cost(space.uniform())["params"]


def test_database_is_reused_and_a_damaged_one_rebuilt(model, tiny_model, text_files, caplog):
    spec = job(tiny_model, text_files, {**SPARSITY, "builder": "magnitude", "levels": 2})
    path = build_space(spec, model).database.path
    stamp = path.stat().st_mtime_ns
    assert build_space(spec, model).database.path == path and path.stat().st_mtime_ns == stamp  # reused
    other = build_space(job(tiny_model, text_files, {**SPARSITY, "builder": "magnitude", "levels": 2,
                                                     "calibration_samples": 4, "sparsity": 0.4}), model)
    assert other.database.path != path  # another budget: another key, another file
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    key = path.stem
    assert "damaged" in check_database(path, key)
    build_space(spec, model)
    assert "rebuilding" in caplog.text and check_database(path, key) is None
    with pytest.raises(RuntimeError, match="expected 'wrong'"):
        LevelDatabase(path, "wrong").tensor(f"{other.units[0]}.removal")


def test_levels_built_on_another_device_have_their_own_key(model, tiny_model, text_files):
    spec = job(tiny_model, text_files, {**SPARSITY, "builder": "magnitude", "levels": 2})
    space = build_space(spec, model)
    documents = load_documents(spec.data, heldout_fraction=spec.evaluation.heldout_fraction)
    key = partial(database_key, space, model_spec=spec.model, documents=documents,
                  samples=spec.space.calibration_samples, seq_len=spec.evaluation.seq_len)
    assert key(model) == space.database.path.stem  # the key a CPU build is stored under
    assert key(copy.deepcopy(model).to("meta")) != key(model)


def test_reconstruction_beats_the_calibration_free_builders_on_correlated_inputs():
    """Same check as the real-model test, on a synthetic layer whose inputs have unequal, correlated columns."""
    torch.manual_seed(0)
    weight, mix = torch.randn(48, 256), torch.randn(256, 256) / 16
    x = (torch.randn(4096, 256) @ mix + torch.randn(4096, 256)) * torch.linspace(0.1, 3, 256)
    xtx = x.T @ x
    error = lambda w: float(torch.einsum("ij,jk,ik->", w - weight, xtx, w - weight))  # noqa: E731
    removed = [weight.numel() // 2]
    magnitude = weight.masked_fill(levels.removal_levels(levels.magnitude_positions(weight), removed) == 0, 0)
    assert error(levels.sparsegpt(weight, xtx, removed)[0]) < error(magnitude)
    rtn, gptq = levels.rtn(weight, [3], 128), levels.gptq(weight, xtx, [3], 128)
    assert error(levels.dequantize(gptq.codes[0], gptq.scale[0], gptq.zero[0], 128)) < error(
        levels.dequantize(rtn.codes[0], rtn.scale[0], rtn.zero[0], 128))


UNQUANTIZED_LEVEL = {**QUANT, "widths": [2, 4, 16], "bits": 5.0}


@pytest.mark.parametrize("space", [SPARSITY, QUANT, UNQUANTIZED_LEVEL], ids=["sparsity", "quant", "quant 2,4,16"])
def test_study_and_export_match_the_store(space, tiny_model, text_files, tmp_path):
    spec = job(tiny_model, text_files, space, **{"strategy.generations": 2})
    outcome = run_job(spec, tmp_path / "s.db", executor="local")
    assert {"initial", "evopress"} <= set(outcome.metrics)
    if space["kind"] == "quant":
        assert all(cost["bits"] <= space["bits"] for label, cost in outcome.costs.items() if label != "dense")
    report = export_candidate(tmp_path / "s.db", "tiny", "best", tmp_path / "export")
    assert report.relative_difference("ppl") < 1e-3 and report.relative_difference("kl") < 1e-3
    if space["kind"] == "sparsity":
        assert report.measured["params"] == report.stored["params"]


def test_impossible_sparsity_step_is_a_user_error(model):
    with pytest.raises(UserError, match="choose a smaller step"):
        SparsitySpace(model, 0.5, "magnitude", 2, step=10**9)


@pytest.mark.parametrize("space", [SPARSITY, QUANT], ids=["sparsity", "quant"])
def test_tied_linears_share_one_level_and_keep_the_budget(space, model, tiny_model, text_files):
    """q/k/v and gate/up become one unit each; their members get row slices of one stacked level."""
    tied = build_space(job(tiny_model, text_files, {**space, "tie": True}), model)
    assert len(tied.units) == 6 * 4 and "model.layers.0.self_attn.q_proj+k_proj+v_proj" in tied.units
    rng = np.random.default_rng(0)
    genome = tied.random_genome(rng)
    for _ in range(10):
        genome = level_switch(genome, tied, rng)
        assert tied.cost(genome) == tied.cost(tied.uniform())
    index = tied.units.index("model.layers.0.mlp.gate_proj+up_proj")
    with tied.applied(model, genome) as candidate:
        gate, up = (candidate.get_submodule(f"model.layers.0.mlp.{n}").weight for n in ("gate_proj", "up_proj"))
        assert up.data_ptr() == gate.data_ptr() + gate.numel() * gate.element_size()  # slices of one tensor
        if space["kind"] == "sparsity":
            assert count_nonzero_parameters(candidate) == tied.cost(genome)["params"]
            removed = int((gate == 0).sum() + (up == 0).sum())
            assert removed == tied.removed[index][genome.levels[index]]


JOINTS = {"depth x sparsity": {"kind": "joint", "depth": {"drop": 2}, "sparsity": {**SPARSITY, "builder": "magnitude"}},
          "depth x quant": {"kind": "joint", "depth": {"granularity": "sublayer", "drop": 3},
                            "quant": {**QUANT, "builder": "rtn"}}}


SPARSE_QUANT = {"kind": "joint", "sparsity": {**SPARSITY, "builder": "magnitude"}, "quant": {**QUANT, "builder": "rtn"}}
SPARSE_QUANTS = {"sparsity x quant": SPARSE_QUANT, "depth x sparsity x quant": {**SPARSE_QUANT, "depth": {"drop": 2}}}


@pytest.fixture(scope="module")
def joint_spaces(model, tiny_model, text_files, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # the per-test cache fixture does not reach module fixtures
        patch.setenv("PARETOPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return {name: build_space(job(tiny_model, text_files, space), model)
                for name, space in {**JOINTS, **SPARSE_QUANTS}.items()}


BUDGETS = {"depth": "dropped", "sparsity": "sparsity", "quant": "bits"}  # the exact budget of each component


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from([*JOINTS, *SPARSE_QUANTS]), steps=st.integers(1, 15))
def test_joint_mutation_keeps_every_component_budget_exact(joint_spaces, seed, name, steps):
    space = joint_spaces[name]
    rng = np.random.default_rng(seed)
    genome = space.random_genome(rng)
    budgets = [budget for component, budget in BUDGETS.items() if component in name]
    expected = space.cost(genome)
    for _ in range(steps):
        genome = level_switch(genome, space, rng)
        cost = space.cost(genome)
        assert space.is_feasible(genome)
        assert [cost[key] for key in budgets] == [expected[key] for key in budgets]


@pytest.mark.parametrize("name", list(JOINTS))
def test_joint_cost_is_what_the_assembled_candidate_holds(joint_spaces, model, name):
    space = joint_spaces[name]
    genome = space.random_genome(np.random.default_rng(3))
    depth_genome, linear_genome = space.split(genome)
    dropped = [u for u, level in zip(space.depth.units, depth_genome.levels, strict=True) if level]
    kept = {i: level for i, (u, level) in enumerate(zip(space.linear.units, linear_genome.levels, strict=True))
            if not any(u.startswith(f"{d}.") for d in dropped)}
    with space.applied(model, genome) as candidate:
        assert len(candidate.model.layers) == len(space.depth.kept_blocks(depth_genome))
        if "sparsity" in name:
            assert count_nonzero_parameters(candidate) == space.cost(genome)["params"]
        else:
            assert space.cost(genome)["bytes"] == sum(space.linear.unit_bits(i, level) for i, level in kept.items()) / 8


def test_joint_study_and_export_match_the_store(tiny_model, text_files, tmp_path):
    spec = job(tiny_model, text_files, JOINTS["depth x quant"], **{"strategy.generations": 2})
    run_job(spec, tmp_path / "j.db", executor="local")
    report = export_candidate(tmp_path / "j.db", "tiny", "best", tmp_path / "export")
    assert report.relative_difference("ppl") < 1e-3 and report.relative_difference("kl") < 1e-3


def test_sparse_quant_weights_and_bytes(joint_spaces, model):
    """Each linear holds its bit-width's codes with its sparsity level's weights removed; bytes count only those."""
    space = joint_spaces["sparsity x quant"]
    genome = space.random_genome(np.random.default_rng(5))
    sparsity_genome, quant_genome = space.split(genome)
    expected_bytes = 0.0
    with space.applied(model, genome) as candidate:
        for index, name in enumerate(space.sparsity.units):
            s, q = sparsity_genome.levels[index], quant_genome.levels[index]
            weight = candidate.get_submodule(name).weight
            removed, width = space.sparsity.removed[index][s], space.quant.widths[q]
            dense = space.quant.dense_weight(model, index).detach()
            quantized = space.quant.level_weight(index, q, dense)
            kept = weight != 0
            assert int((~kept).sum()) >= removed
            assert torch.equal(weight[kept], quantized[kept])
            groups = space.quant.groups_per_unit[index]
            expected_bytes += (width * (weight.numel() - removed + groups) + 16 * groups
                               + (weight.numel() if removed else 0)) / 8
    assert space.cost(genome)["bytes"] == pytest.approx(expected_bytes)
    assert space.cost(genome)["params"] == space.sparsity.cost(sparsity_genome)["params"]


def test_sparse_quant_study_and_export_match_the_store(tiny_model, text_files, tmp_path):
    spec = job(tiny_model, text_files, SPARSE_QUANTS["depth x sparsity x quant"], **{"strategy.generations": 2})
    outcome = run_job(spec, tmp_path / "j.db", executor="local")
    assert outcome.costs["initial"]["bits"] == outcome.costs["evopress"]["bits"]
    report = export_candidate(tmp_path / "j.db", "tiny", "best", tmp_path / "export")
    assert report.relative_difference("ppl") < 1e-3 and report.relative_difference("kl") < 1e-3


BAD_SPACES = {
    "unknown level builder": ({"space": {**SPARSITY, "builder": "obs"}}, "space.builder"),
    "sparsity over 100%": ({"space": {**SPARSITY, "sparsity": 1.2}}, "sparsity budget 1.2 is impossible"),
    "bits below the smallest width": ({"space": {**QUANT, "bits": 1.5}}, "quant budget 1.5 average bits is impossible"),
    "unsupported bit-width": ({"space": {**QUANT, "widths": [4, 10]}}, "bit-width 10 is not supported"),
    "uneven bit-widths next to sparsity": ({"space": {"kind": "joint", "sparsity": {**SPARSITY, "builder": "wanda"},
                                                      "quant": {**QUANT, "widths": [2, 3, 4, 16]}}}, "evenly spaced"),
    "nsga2 on sparsity": ({"space": SPARSITY, "strategy": {"kind": "nsga2", "generations": 1, "population": 2,
                                                             "tokens": 32}}, "nsga2 searches depth and width spaces"),
    "joint without a linear space": ({"space": {"kind": "joint", "depth": {"drop": 2}}}, "at least two of depth"),
    "sparsegpt next to quant": ({"space": {"kind": "joint", "sparsity": {**SPARSITY, "builder": "sparsegpt"},
                                           "quant": QUANT}}, "needs mask levels"),
}


@pytest.mark.parametrize("case", list(BAD_SPACES), ids=list(BAD_SPACES))
def test_bad_space_is_one_line_exit_2_and_leaves_the_store(case, tiny_model, text_files, tmp_path, capsys):
    """The CLI's bad-input check (tests/test_cli.py) with these spaces' impossible requests."""
    changes, message = BAD_SPACES[case]
    refused(job_yaml(tiny_model, text_files), job_yaml(tiny_model, text_files, **changes), message, tmp_path, capsys)
