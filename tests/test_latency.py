"""Latency tables: rows round-trip through the store, jobs measure only what is missing, `paretopress profile`."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretopress.cli import main
from paretopress.kernel.errors import UserError
from paretopress.profile import Setting, latency_table, median_times, model_key, space_times, time_table, timed_rounds
from paretopress.spaces.specs.width import LatencySpec
from paretopress.spaces.width import WidthSpace
from paretopress.store.store import Store

SETTING = ("cpu: test machine x 1 threads", "float32", 1, 16)


@pytest.fixture(scope="module")
def model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


def test_rows_round_trip_and_a_new_measurement_replaces_the_old(tmp_path):
    db = tmp_path / "l.db"
    rows = {("LlamaMLP(hidden=32)", 64): 1.5e-4, ("LlamaMLP(hidden=32)", 0): 2e-6, ("LlamaForCausalLM[x]", 0): 3e-3}
    with Store(db) as store:
        store.record_latencies(*SETTING, rows, repeats=5)
    with Store(db, readonly=True) as store:
        assert store.latencies(*SETTING) == rows
        assert store.latencies("cuda: other", "float32", 1, 16) == {}  # keyed by device, dtype and shape
        assert store.latencies(SETTING[0], "float32", 2, 16) == {}
    with Store(db) as store:
        store.record_latencies(*SETTING, {("LlamaMLP(hidden=32)", 64): 1.4e-4}, repeats=5)
        assert store.latencies(*SETTING) == {**rows, ("LlamaMLP(hidden=32)", 64): 1.4e-4}


def test_a_job_reads_a_complete_table_and_measures_an_incomplete_one_in_one_run(model, tiny_model, tmp_path):
    setting = Setting.from_spec(LatencySpec(batch=1, seq=16, threads=1))
    coarse = WidthSpace(model, None, [1.0, 0.5, 0.0], "magnitude")
    finer = WidthSpace(model, None, [1.0, 0.75, 0.5, 0.0], "magnitude")
    whole = model_key(model, str(tiny_model))
    with Store(tmp_path / "l.db") as store:
        first = latency_table(store, model, str(tiny_model), coarse, setting, repeats=2)
        assert set(first) == {key for keys in coarse.latency_keys() for key in keys} | {whole}
        assert all(first[(part.signature, 0)] == 0 for part in coarse.parts)  # the reference: dropped adds nothing
        assert first[whole] > 0 and all(seconds >= 0 for seconds in first.values())
        assert latency_table(store, model, str(tiny_model), coarse, setting, repeats=2) == first  # read back
        finer_table = latency_table(store, model, str(tiny_model), finer, setting, repeats=2)
        assert (finer.parts[1].signature, 48) in finer_table and set(first) <= set(finer_table)
        assert store.latencies(*setting.key()) == finer_table


def _noisy_table(space: WidthSpace, whole: float, name: str = "whole") -> dict:
    attention, mlp = (part.signature for part in space.parts)
    return {(attention, 2): 3e-4, (attention, 1): 4e-4, (attention, 0): 1e-6,  # noise: 1 group slower than 2
            (mlp, 64): 2e-4, (mlp, 32): 1e-4, (mlp, 0): 1e-6, (name, 0): whole}


def test_time_table_never_makes_a_narrower_sub_layer_slower(model):
    space = WidthSpace(model, None, [1.0, 0.5, 0.0], "magnitude")
    times = time_table(space, _noisy_table(space, 5e-3), ("whole", 0), "cpu")
    assert times.seconds[0] == (3e-4, 3e-4, 1e-6) and times.seconds[1] == (2e-4, 1e-4, 1e-6)
    assert times.estimate(space.dense().levels) == pytest.approx(5e-3) and times.consistent
    assert not time_table(space, _noisy_table(space, 2e-3), ("whole", 0), "cpu").consistent  # 6 x 5e-4 > 2e-3


def test_a_search_refuses_an_inconsistent_stored_table_and_profile_shows_it(model, tiny_model, tmp_path, capsys):
    latency = LatencySpec(seq=16, threads=1)
    space = WidthSpace(model, None, [1.0, 0.5, 0.0], "magnitude")
    whole = model_key(model, str(tiny_model))
    db = tmp_path / "l.db"
    with Store(db) as store:
        store.record_latencies(*Setting.from_spec(latency).key(), _noisy_table(space, 2e-3, whole[0]), repeats=2)
        with pytest.raises(UserError, match=r"inconsistent.*profile --force"):
            space_times(store, model, str(tiny_model), space, latency)
    assert main(["profile", str(tiny_model), "--db", str(db), "--seq", "16", "--threads", "1",
                 "--channels", "1", "0.5", "0"]) == 0  # reads the stored table: shows it, says a search cannot use it
    assert "a search cannot use this table" in capsys.readouterr().out


def test_every_call_runs_once_per_round_after_warm_up():
    counts = {"a": 0, "b": 0}
    calls = {(name, 0): (lambda n=name: counts.__setitem__(n, counts[n] + 1)) for name in counts}
    times = median_times(calls, repeats=7)
    assert counts == {"a": 10, "b": 10} and set(times) == set(calls)
    rounds = timed_rounds(calls, repeats=4)  # per call, one time per round in round order: paired differences
    assert counts == {"a": 17, "b": 17} and {key: len(t) for key, t in rounds.items()} == {k: 4 for k in calls}


def test_profile_command_prints_and_stores_the_table(tiny_model, tmp_path, capsys):
    db = tmp_path / "p.db"
    argv = ["profile", str(tiny_model), "--db", str(db), "--seq", "16", "--repeats", "2", "--threads", "1",
            "--channels", "1", "0.5", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "LlamaAttention(hidden=32,head_dim=8,heads_per_kv=2,bias=False)" in out and "whole model" in out
    with Store(db, readonly=True) as store:
        assert len(store.latencies(Setting.from_spec(LatencySpec(seq=16, threads=1)).name, "float32", 1, 16)) == 7


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "--batch"),
    (["--device", "tpu"], "invalid choice"),
    (["--repeats", "many"], "invalid int value"),
])
def test_profile_mistakes_are_one_line(tiny_model, tmp_path, capsys, argv, message):
    assert main(["profile", str(tiny_model), "--db", str(tmp_path / "p.db"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
