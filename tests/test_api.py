"""The pandas API on a store of two finished tiny studies, and reading while a writer writes."""

import sqlite3
import subprocess
import sys
import threading

import pytest

import paretopress
from paretopress.job import JobSpec
from paretopress.kernel.errors import UserError
from paretopress.report.front import model_front, study_front
from paretopress.search.pareto import non_dominated
from paretopress.spaces.genome import Genome
from paretopress.spaces.specs import budget_text
from paretopress.store.store import Store


def test_import_stays_light():
    """The CLI imports the package before parsing arguments: the API loads only when used."""
    code = "import sys, paretopress; print(sorted({'pandas', 'sqlalchemy', 'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_studies_table(tiny_store, tiny_model):
    with paretopress.open_store(tiny_store) as view:
        studies = view.studies()
    assert list(studies["name"]) == ["tiny", "tiny-sub"]
    assert list(studies["granularity"]) == ["block", "sublayer"]
    assert list(studies["budget"]) == ["drop=2", "drop=3"]
    assert set(studies["model"]) == {str(tiny_model)} and set(studies["strategy"]) == {"evopress"}
    assert (studies["candidates"] > 2).all() and (studies["status"] == "completed").all()


@pytest.mark.parametrize(("space", "text"), [
    ({"kind": "depth", "drop": [4, 6]}, "drop=[4, 6]"),
    ({"kind": "sparsity", "sparsity": 0.5}, "sparsity=0.5"),
    ({"kind": "quant", "bits": 3.0}, "bits=3.0"),
    ({"kind": "width", "speedup": [1.5, 2.0]}, "speedup=[1.5, 2.0]"),
    ({"kind": "joint", "depth": {"drop": 2}, "sparsity": {"sparsity": 0.5}, "quant": {"bits": 4.0}},
     "drop=2, sparsity=0.5, bits=4.0"),
])
def test_every_space_kind_shows_its_budget(space, text):
    """What `studies` prints and the API's ``budget`` column: the budget alone, read from the stored spec."""
    job = JobSpec.model_validate({"name": "n", "model": "m", "data": "wiki-sample", "space": space})
    assert budget_text(job.on_device("cpu").study_spec()["space"]) == text


def test_candidates_table(tiny_store):
    with paretopress.open_store(tiny_store) as view, Store(tiny_store, readonly=True) as store:
        frame = view.candidates("tiny")
        rows = store.candidates(store.study("tiny").id)
        heldout = store.evaluations(store.study("tiny").id, "heldout")
    assert list(frame["candidate"]) == [c.id for c in rows]
    assert {"kl", "ppl", "params", "calib_kl", "calib_tokens", "genome", "compressed", "parent"} <= set(frame.columns)
    assert frame["genome"].map(len).eq(6).all()
    dense = frame[frame["origin"] == "dense"].iloc[0]
    assert dense["compressed"] == 0 and dense["kl"] == pytest.approx(0, abs=1e-6)
    assert (frame.loc[frame["origin"] != "dense", "compressed"] == 2).all()
    assert frame["kl"].notna().sum() == len({e.candidate_id for e in heldout})
    searched = frame[frame["origin"] == "evopress"]
    assert searched["calib_tokens"].notna().all() and set(searched["calib_tokens"]) <= {64, 128}
    assert searched["calib_tokens"].max() == 128  # the last stage's fidelity


def test_front_equals_study_front(tiny_store):
    with paretopress.open_store(tiny_store) as view, Store(tiny_store, readonly=True) as store:
        for name in ("tiny", "tiny-sub"):
            frame = view.front(name)
            rows = study_front(store, store.study(name).id)
            assert frame.astype(object).where(frame.notna(), None).to_dict("records") == rows


def test_front_across_studies_of_one_model(tiny_store, tiny_model):
    with paretopress.open_store(tiny_store) as view, Store(tiny_store, readonly=True) as store:
        frame = view.front_across()
        rows = model_front(store, str(tiny_model))
        pooled = [{"study": s.name, **r} for s in store.studies() for r in study_front(store, s.id)]
    assert frame.astype(object).where(frame.notna(), None).to_dict("records") == rows
    points = [(r["kl"], r["params"]) for r in pooled]
    assert sorted(zip(frame["kl"], frame["params"], strict=True)) == sorted(points[i] for i in non_dominated(points))
    labelled = {(r["study"], r["candidate"]) for r in pooled}
    assert all((r["study"], r["candidate"]) in labelled for r in rows)
    assert set(frame["study"]) == {"tiny", "tiny-sub"}  # the two dense references tie


def test_front_across_names_a_model(tiny_store):
    with paretopress.open_store(tiny_store) as view, pytest.raises(UserError, match="no study of model 'other'"):
        view.front_across("other")


def test_hypervolume(tiny_store):
    with paretopress.open_store(tiny_store) as view, Store(tiny_store, readonly=True) as store:
        frame = view.hypervolume("tiny")
        rows = store.hypervolumes(store.study("tiny").id)
    assert list(frame.columns) == ["study", "generation", "hypervolume", "objectives", "reference"]
    assert frame["generation"].tolist() == [h.generation for h in rows] and (frame["study"] == "tiny").all()
    assert frame["hypervolume"].tolist() == [h.value for h in rows]
    assert frame["objectives"].tolist() == [h.objectives for h in rows]


def test_store_without_hypervolumes(tiny_store, tmp_path):
    """Stores written before hypervolumes were recorded lack the table: an empty frame, not an error."""
    old = tmp_path / "old.db"
    with sqlite3.connect(tiny_store) as source, sqlite3.connect(old) as target:
        source.backup(target)
        target.execute("DROP TABLE hypervolumes")
    with paretopress.open_store(old) as view:
        assert view.hypervolume("tiny").empty


def test_genome(tiny_store):
    with paretopress.open_store(tiny_store) as view:
        chosen = int(view.front("tiny-sub")["candidate"].iloc[0])
        genome = view.genome("tiny-sub", chosen)
        listed = view.candidates("tiny-sub").set_index("candidate").loc[chosen, "genome"]
    assert genome["level"].tolist() == listed and len(genome) == 12 and genome["level"].sum() == 3
    assert genome["unit"].iloc[0].endswith("layers.0.self_attn") and genome["unit"].iloc[1].endswith("layers.0.mlp")


def test_unknown_study_and_missing_store(tiny_store, tmp_path):
    with paretopress.open_store(tiny_store) as view, pytest.raises(UserError, match="no study 'nope'"):
        view.candidates("nope")
    with pytest.raises(UserError, match="no store"):
        paretopress.open_store(tmp_path / "absent.db")


def test_reading_while_a_job_writes(tmp_path):
    """WAL: a reader in a loop and the single writer never see 'database is locked'."""
    db = tmp_path / "live.db"
    writer = Store(db)
    spec = {"model": "m", "space": {"kind": "depth", "granularity": "block", "drop": 1}, "strategy": {"kind": "x"}}
    study_id, _ = writer.open_study("live", spec, 0, {"kind": "depth", "units": ["a.0", "a.1"]})
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(150):
                writer.record(study_id, Genome((i % 2, i)), "evopress", None, i, "heldout", (0, 1), 64,
                              {"kl": 1.0 / (i + 1), "params": float(100 - i)}, 0.01, "w")
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    thread = threading.Thread(target=write)
    seen = []
    with paretopress.open_store(db) as view:
        thread.start()
        while thread.is_alive():
            seen.append(len(view.candidates("live")))
            view.front("live")
        seen.append(len(view.candidates("live")))
    thread.join()
    writer.close()
    assert not errors and seen == sorted(seen) and seen[-1] == 150 and len(seen) > 2
