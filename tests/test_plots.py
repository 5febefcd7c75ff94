"""Pictures as files read back, genome layouts, and the `plot` and machine-readable `front` commands."""

import csv
import io
import json
import math

import matplotlib.image
import pandas as pd
import pytest

import paretopress
from paretopress.cli import main
from paretopress.kernel.errors import UserError
from paretopress.report.plots import front_steps, genome_grid


@pytest.fixture(scope="module")
def frames(tiny_store) -> dict[str, pd.DataFrame]:
    with paretopress.open_store(tiny_store) as view:
        return {name: view.candidates(name) for name in ("tiny", "tiny-sub")}


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf", ".html"])
def test_front_files(frames, tmp_path, suffix):
    path = paretopress.plot_front(frames, tmp_path / f"front{suffix}")
    assert path.stat().st_size > 0
    if suffix == ".png":
        height, width, _ = matplotlib.image.imread(path).shape
        assert height > 100 and width > 100
    elif suffix == ".html":
        text = path.read_text()
        origin = frames["tiny-sub"]["origin"].iloc[-1]
        assert 'class="plotly-graph-div"' in text and f"tiny-sub: {origin}" in text
    elif suffix == ".svg":
        assert "<svg" in path.read_text()
    else:
        assert path.read_bytes().startswith(b"%PDF")


def test_any_origin_name_and_one_frame_with_a_study_column(frames, tmp_path):
    """Baselines added later (e.g. ``owl``) need no change here; a pooled frame splits by its study column."""
    pooled = pd.concat([frame.assign(study=name) for name, frame in frames.items()])
    pooled.loc[pooled["origin"] == pooled["origin"].iloc[-1], "origin"] = "owl"
    path = paretopress.plot_front(pooled, tmp_path / "pooled.html")
    assert "tiny: owl" in path.read_text()


def test_front_steps_are_the_non_dominated_corners():
    frame = pd.DataFrame({"params": [10, 8, 8, 5, 12], "kl": [0.0, 0.3, 0.5, 1.0, 0.2]})
    assert front_steps(frame, "params", "kl") == ([5, 8, 10], [1.0, 0.3, 0.0])


def test_genome_grid_layouts():
    assert genome_grid([0, 1, 0], ["model.layers.0", "model.layers.1", "model.layers.2"]) == (
        ["block"], [0, 1, 2], [[0.0, 1.0, 0.0]])
    rows, columns, grid = genome_grid([1, 0, 0, 1], ["m.layers.0.self_attn", "m.layers.0.mlp",
                                                     "m.layers.1.self_attn", "m.layers.1.mlp"])
    assert rows == ["self_attn", "mlp"] and columns == [0, 1] and grid == [[1.0, 0.0], [0.0, 1.0]]
    rows, _, grid = genome_grid([2, 3], ["m.layers.0.mlp.down_proj", "m.layers.1.self_attn.q_proj"])
    assert rows == ["mlp.down_proj", "self_attn.q_proj"] and grid[0][0] == 2.0 and math.isnan(grid[0][1])
    assert genome_grid([1, 2], ["embed", "head"]) == (["level"], [0, 1], [[1.0, 2.0]])


@pytest.mark.parametrize("suffix", [".png", ".html"])
def test_genome_and_hypervolume_files(tiny_store, tmp_path, suffix):
    with paretopress.open_store(tiny_store) as view:
        candidate = int(view.front("tiny-sub")["candidate"].iloc[0])
        genome = view.genome("tiny-sub", candidate)
        hypervolume = pd.concat([view.hypervolume("tiny"), view.hypervolume("tiny-sub")])
    pictures = [paretopress.plot_genome(genome["level"], genome["unit"], tmp_path / f"genome{suffix}"),
                paretopress.plot_hypervolume(hypervolume, tmp_path / f"hypervolume{suffix}")]
    for path in pictures:
        if suffix == ".png":
            assert matplotlib.image.imread(path).size > 0
        else:
            assert 'class="plotly-graph-div"' in path.read_text()


def test_plot_errors(frames, tmp_path):
    with pytest.raises(UserError, match="must end in"):
        paretopress.plot_front(frames, tmp_path / "front.jpg")
    with pytest.raises(UserError, match="does not exist"):
        paretopress.plot_front(frames, tmp_path / "missing" / "front.png")
    with pytest.raises(UserError, match="no candidate has held-out"):
        paretopress.plot_front({"empty": frames["tiny"].iloc[0:0]}, tmp_path / "front.png")
    with pytest.raises(UserError, match="no column 'latency'"):
        paretopress.plot_front(frames, tmp_path / "front.png", x="latency")


def test_cli_plot(tiny_store, tmp_path, capsys):
    out = tmp_path / "both.png"
    assert main(["plot", "tiny", "2", "-o", str(out), "--db", str(tiny_store)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert matplotlib.image.imread(out).size > 0


def test_cli_front_csv_and_json(tiny_store, capsys):
    assert main(["front", "tiny", "--csv", "--db", str(tiny_store)]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert main(["front", "tiny", "--json", "--db", str(tiny_store)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [int(r["candidate"]) for r in table] == [r["candidate"] for r in rows]
    assert [float(r["kl"]) for r in table] == [r["kl"] for r in rows]
    assert rows[-1]["origin"] == "dense" and rows[-1]["generation"] is None and {"kl", "params", "ppl"} <= set(rows[0])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["plot", "tiny", "-o", "front.gif"], "must end in"),
        (["plot", "nope", "-o", "front.png"], "no study 'nope'"),
        (["front", "nope", "--json"], "no study 'nope'"),
        (["front", "tiny", "--csv", "--json"], "not allowed with"),
        (["plot", "tiny"], "required"),
    ],
)
def test_cli_user_errors(argv, message, tiny_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--db", str(tiny_store)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert message in err and "\n" not in err and not captured.out


def test_cli_missing_store(tmp_path, capsys):
    assert main(["plot", "tiny", "-o", str(tmp_path / "front.png"), "--db", str(tmp_path / "absent.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no store" in err and "\n" not in err
