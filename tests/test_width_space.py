"""Width space on the tiny model: KV-group-consistent levels, exact costs, time budgets, smaller exported shapes."""

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from paretopress.cli import main
from paretopress.job import JobSpec
from paretopress.kernel.errors import UserError
from paretopress.kernel.params import count_parameters
from paretopress.profile import Setting, model_key
from paretopress.report.export import export_candidate
from paretopress.report.formats.transformers import save_checkpoint
from paretopress.run import build_space, run_job
from paretopress.search.operators import mutate
from paretopress.spaces import pruned
from paretopress.spaces.budget import TimeTable
from paretopress.spaces.genome import Genome
from paretopress.spaces.structured import columns
from paretopress.spaces.width import WidthSpace
from paretopress.store.store import Store
from tests.support import job_yaml

WIDTH = {"kind": "width", "speedup": [1.2, 1.5], "channels": [1.0, 0.5, 0.25, 0.0], "multiple": 1,
         "calibration_samples": 8, "latency": {"repeats": 3}}


def width_job(tiny_model, text_files, **changes) -> JobSpec:
    return JobSpec.model_validate(job_yaml(tiny_model, text_files, space=WIDTH, **changes))


@pytest.fixture(scope="module")
def model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def space(model, tiny_model, text_files, tmp_path_factory) -> WidthSpace:
    """The job's width space with its OBS level database, built in the session's private cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARETOPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return build_space(width_job(tiny_model, text_files), model)


def logits(model, tokens):
    with torch.inference_mode():
        return model(input_ids=tokens, use_cache=False).logits


def random_genome(space, rng) -> Genome:
    return Genome(tuple(int(rng.integers(n)) for n in space.num_levels))


def test_grid_rounds_fractions_to_whole_structures(space):
    assert space.kept[0] == (2, 1, 0)  # 2 KV groups of 2 query heads each; every count by default
    assert space.kept[1] == (64, 32, 16, 0)
    assert space.units[:2] == ("model.layers.0.self_attn", "model.layers.0.mlp")


@pytest.mark.parametrize("level", [0, 1, 2])
def test_attention_levels_keep_whole_kv_groups(space, model, level):
    """q/k/v/o shrink by whole KV groups, the same groups in all four, so every query head keeps its KV head."""
    genome = Genome((level, 0) * 6)
    kept = space.kept[0][level]
    dense = {name: model.get_submodule(f"model.layers.3.self_attn.{name}").weight.detach().clone()
             for name in ("q_proj", "k_proj", "v_proj")}
    tokens = torch.randint(0, model.config.vocab_size, (2, 16))
    with space.applied(model, genome) as candidate:
        attention = candidate.get_submodule("model.layers.3.self_attn")
        assert torch.isfinite(logits(candidate, tokens)).all()
        if kept == 0:
            assert isinstance(attention, pruned.DroppedAttention)
            return
        keep = space.database.tensor("model.layers.3.self_attn.keep").tolist()[:kept]
        assert attention.q_proj.weight.shape == (kept * 2 * 8, 32)  # 2 query heads of head_dim 8 per group
        assert attention.k_proj.weight.shape == attention.v_proj.weight.shape == (kept * 8, 32)
        assert attention.o_proj.weight.shape == (32, kept * 2 * 8)
        assert attention.q_proj.out_features // attention.k_proj.out_features == attention.num_key_value_groups
        assert torch.equal(attention.q_proj.weight, dense["q_proj"][columns(keep, 16)])
        for name in ("k_proj", "v_proj"):
            assert torch.equal(getattr(attention, name).weight, dense[name][columns(keep, 8)])


def test_mlp_levels_are_nested_channel_prefixes(space, model):
    keep = space.database.tensor("model.layers.1.mlp.keep")
    gate = model.get_submodule("model.layers.1.mlp.gate_proj").weight.detach().clone()
    for level, kept in enumerate(space.kept[1]):
        with space.applied(model, Genome((0, level) * 6)) as candidate:
            mlp = candidate.get_submodule("model.layers.1.mlp")
            if kept == 0:
                assert isinstance(mlp, pruned.DroppedMLP)
                norm = candidate.get_submodule("model.layers.1.post_attention_layernorm")
                assert isinstance(norm, torch.nn.Identity)
                continue
            assert mlp.down_proj.weight.shape == (32, kept) and mlp.up_proj.weight.shape == (kept, 32)
            assert torch.equal(mlp.gate_proj.weight, gate[keep[:kept]] if level else gate)  # level 0: the dense MLP


def test_cost_is_exact_and_applied_copies_nothing_and_is_undone(space, model):
    rng = np.random.default_rng(0)
    tokens = torch.randint(0, model.config.vocab_size, (2, 16))
    before = logits(model, tokens)
    pointers = {name: p.data_ptr() for name, p in model.named_parameters()}
    for _ in range(8):
        genome = random_genome(space, rng)
        with space.applied(model, genome) as candidate:
            assert count_parameters(candidate) == space.cost(genome)["params"]
            unit = next(u for u, (kept, level) in enumerate(zip(space.kept, genome.levels, strict=True))
                        if 0 < kept[level] < kept[0] and u % 2 == 0)
            stored = space.database.tensor(f"{space.units[unit]}.q_proj.weight")
            assert candidate.get_submodule(f"{space.units[unit]}.q_proj").weight.data_ptr() == stored.data_ptr()
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == pointers
    assert torch.equal(logits(model, tokens), before)


def test_materialised_checkpoint_loads_with_the_small_loader_and_computes_what_applied_does(space, model, tiny_model,
                                                                                           tmp_path):
    tokens = torch.randint(0, model.config.vocab_size, (2, 16))
    genome = Genome((2, 3, 1, 1, 0, 2, 2, 0, 1, 0, 0, 1))  # block 0 loses both sub-layers; layer 3 keeps no attention
    with space.applied(model, genome) as candidate:
        expected = logits(candidate, tokens)
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    assert save_checkpoint(space.materialise(fresh, genome), tmp_path)
    assert fresh.config.num_hidden_layers == 5
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, trust_remote_code=True).eval()
    assert type(reloaded).__name__ == "PrunedLlamaForCausalLM"
    assert count_parameters(reloaded) == space.cost(genome)["params"]
    assert torch.allclose(logits(reloaded, tokens), expected, atol=1e-5)
    with pytest.raises(RuntimeError, match="mismatch"):  # stock Llama cannot hold per-layer widths
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_uniformly_narrowed_model_is_a_stock_checkpoint(space, model, tiny_model, tmp_path):
    tokens = torch.randint(0, model.config.vocab_size, (2, 16))
    genome = Genome((1, 1) * 6)
    with space.applied(model, genome) as candidate:
        expected = logits(candidate, tokens)
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    assert not save_checkpoint(space.materialise(fresh, genome), tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert (reloaded.config.num_attention_heads, reloaded.config.num_key_value_heads) == (2, 1)
    assert reloaded.config.intermediate_size == 32
    assert torch.allclose(logits(reloaded, tokens), expected, atol=1e-5)


def synthetic_times(space: WidthSpace, seed: int) -> TimeTable:
    """Unit times that fall with the width (a dropped sub-layer: 1 us), as measured ones do after ``time_table``; the
    rest of the model takes 30%."""
    rng = np.random.default_rng(seed)
    seconds = tuple((*sorted(rng.uniform(1e-4, 1e-3, n - 1), reverse=True), 1e-6) for n in space.num_levels)
    prunable = sum(s[0] for s in seconds)
    return TimeTable(seconds, prunable / 0.7, "synthetic")


def store_times(db, space: WidthSpace, model, tiny_model, job: JobSpec) -> dict:
    """Write ``synthetic_times`` into the store's latency table, as `paretopress profile` would: a job reads them."""
    times, setting = synthetic_times(space, 0), Setting.from_spec(job.space.latency)
    rows = {key: seconds for keys, unit in zip(space.latency_keys(), times.seconds, strict=True)
            for key, seconds in zip(keys, unit, strict=True)}
    rows[model_key(model, str(tiny_model))] = times.dense
    with Store(db) as store:
        store.record_latencies(*setting.key(), rows, repeats=1)
    return rows


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), speedup=st.floats(1.05, 2.0), steps=st.integers(1, 12))
def test_mutations_stay_within_the_time_budget_and_on_its_boundary(space, seed, speedup, steps):
    timed = space.timed(synthetic_times(space, seed)).at_speedup(speedup)
    rng = np.random.default_rng(seed)
    genome = timed.random_genome(rng)
    for _ in range(steps):
        assert timed.is_feasible(genome) and timed.cost(genome)["speedup"] >= speedup * (1 - 1e-6)
        limit = timed.limit
        for unit, level in enumerate(genome.levels):  # no unit can be made one level wider within the budget
            if level:
                assert not limit.fits(genome.with_levels({unit: level - 1}).levels)
        genome = mutate(genome, timed, rng)
    uniform = timed.uniform()
    assert timed.is_feasible(uniform) and len(set(uniform.levels[0::2])) == len(set(uniform.levels[1::2])) == 1


def test_estimated_time_is_the_table_sum(space):
    times = synthetic_times(space, 0)
    timed = space.timed(times)
    genome = random_genome(space, np.random.default_rng(1))
    remainder = times.dense - sum(s[0] for s in times.seconds)
    table_sum = sum(s[level] for s, level in zip(times.seconds, genome.levels, strict=True))
    assert timed.cost(genome)["time"] == pytest.approx(remainder + table_sum, rel=1e-12)
    assert timed.cost(space.dense())["time"] == pytest.approx(times.dense, rel=1e-12)
    assert timed.cost(genome)["speedup"] == pytest.approx(times.dense / (remainder + table_sum), rel=1e-12)
    budget = times.budget(1.5)
    assert times.dense / (remainder + budget) == pytest.approx(1.5)  # T = t/s - (t - t_prunable)


def test_unreachable_speedup_is_a_user_error(space):
    timed = space.timed(synthetic_times(space, 0))
    with pytest.raises(UserError, match="speedup 9 is not reachable"):
        timed.at_speedup(9.0)


def test_width_study_searches_each_speedup_and_exports_a_narrower_model(space, model, tiny_model, text_files,
                                                                         tmp_path):
    """Local executor: the store's latency table (written beforehand: times measured on a busy 2-core machine are
    noise), one EvoPress run per target, export re-measured."""
    job = width_job(tiny_model, text_files)
    db = tmp_path / "w.db"
    rows, key = store_times(db, space, model, tiny_model, job), Setting.from_spec(job.space.latency).key()
    outcome = run_job(job, db, executor="local")
    with Store(db, readonly=True) as store:
        assert store.latencies(*key) == rows  # read, not measured again
    for target in (1.2, 1.5):
        for origin in ("initial", "evopress"):
            label = f"{origin} speedup={target:g}"
            assert outcome.costs[label]["speedup"] >= target * (1 - 1e-6), label
    with Store(db, readonly=True) as store:
        study = store.study("tiny")
        key = next(c.id for c in store.candidates(study.id) if c.genome_key == outcome.genomes[
            "evopress speedup=1.5"].key)
    report = export_candidate(db, "tiny", str(key), tmp_path / "export")
    assert report.relative_difference("kl") < 1e-3 and report.relative_difference("params") == 0


def test_spdy_picks_levels_within_each_time_budget_and_warm_starts_evopress(space, model, tiny_model, text_files,
                                                                           tmp_path):
    job = width_job(tiny_model, text_files, baselines=[{"method": "spdy", "samples": 2}],
                    **{"strategy.warm_start": "spdy", "strategy.generations": 1})
    db = tmp_path / "s.db"
    store_times(db, space, model, tiny_model, job)
    outcome = run_job(job, db, executor="local")
    for target in (1.2, 1.5):
        spdy = outcome.genomes[f"spdy speedup={target:g}"]
        assert outcome.costs[f"spdy speedup={target:g}"]["speedup"] >= target * (1 - 1e-6)
        assert outcome.genomes[f"initial speedup={target:g}"] == spdy  # EvoPress started from it
    with Store(db, readonly=True) as store:
        study = store.study("tiny")
        origins = {c.genome_key: c.origin for c in store.candidates(study.id)}
    assert origins[outcome.genomes["spdy speedup=1.5"].key] == "spdy speedup=1.5"


def test_nsga2_with_latency_as_objective_keeps_every_genome_at_least_as_fast_as_the_smallest_target(
        space, model, tiny_model, text_files, tmp_path):
    job = width_job(tiny_model, text_files, strategy={"kind": "nsga2", "generations": 2, "population": 6,
                                                      "tokens": 64, "objectives": ["kl", "latency"]})
    db = tmp_path / "n.db"
    store_times(db, space, model, tiny_model, job)
    outcome = run_job(job, db, executor="local")
    found = [label for label in outcome.genomes if label.startswith("nsga2")]
    assert found and all(outcome.costs[label]["speedup"] >= 1.2 * (1 - 1e-6) for label in found)
    times = [outcome.costs[label]["time"] for label in found]
    assert times == sorted(times)  # numbered along the front by estimated time


BAD_WIDTH = {
    "speedup of one": ({"speedup": 1.0}, "space.speedup: a speedup target must be above 1"),
    "repeated targets": ({"speedup": [1.5, 1.5]}, "distinct"),
    "fraction above one": ({"channels": [1.0, 1.5]}, "kept fractions must lie between 0 and 1"),
    "unreachable target": ({"speedup": 40.0}, "speedup 40 is not reachable"),
    "latency on a gpu this machine lacks": ({"latency": {"device": "cuda"}}, "cuda is not available"),
    "latency objective on depth": ({"kind": "depth", "drop": 2, "speedup": None, "channels": None,
                                    "multiple": None, "calibration_samples": None, "latency": None},
                                   "latency needs a width space"),
}


@pytest.mark.parametrize("case", list(BAD_WIDTH), ids=list(BAD_WIDTH))
def test_width_mistakes_are_one_line_errors(case, space, model, tiny_model, text_files, tmp_path, capsys):
    changes, message = BAD_WIDTH[case]
    spec = {key: value for key, value in {**WIDTH, **changes}.items() if value is not None}
    strategy = {"kind": "nsga2", "tokens": 64, "objectives": ["kl", "latency"]} if spec["kind"] == "depth" else None
    job = job_yaml(tiny_model, text_files, space=spec, **({"strategy": strategy} if strategy else {}))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(job))
    db = tmp_path / "bad.db"
    if spec["kind"] == "width" and "latency" not in changes:
        store_times(db, space, model, tiny_model, width_job(tiny_model, text_files))
    assert main(["run", str(path), "--db", str(db), "--executor", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paretopress: error:") and message in err and "\n" not in err
