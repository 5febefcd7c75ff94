"""Front, genome and hypervolume pictures written to files; the suffix picks the renderer.

PNG, SVG and PDF come from matplotlib figures built without pyplot (Agg canvas: no display, no global backend
switch, so notebooks keep their own); HTML comes from plotly, self-contained so it opens on machines without
network. The same call therefore serves the CLI, scripts and notebooks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from itertools import cycle
from pathlib import Path
from typing import TYPE_CHECKING

from paretopress.kernel.errors import UserError
from paretopress.search.pareto import non_dominated

if TYPE_CHECKING:
    from typing import TypeAlias

    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    Frames: TypeAlias = pd.DataFrame | Mapping[str, pd.DataFrame]

STATIC = (".png", ".svg", ".pdf")
HTML = ".html"
MARKERS = ("o", "s", "^", "D", "v", "p", "*", "h", "X")  # one per study, cycled
PLOTLY_MARKERS = ("circle", "square", "triangle-up", "diamond", "triangle-down", "pentagon", "star", "hexagon", "x")
LINESTYLES = ("-", "--", ":", "-.")
PLOTLY_DASHES = ("solid", "dash", "dot", "dashdot")
LABELS = {
    "kl": "held-out KL(dense || candidate) per token",
    "ppl": "held-out perplexity",
    "params": "parameters",
}
UNIT = re.compile(r"^(?P<prefix>.+?)\.(?P<index>\d+)(?:\.(?P<part>.+))?$")


def renderer(path: str | Path) -> str:
    """``matplotlib`` or ``plotly`` for this output file; a one-line UserError for anything else."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*STATIC, HTML):
        raise UserError(f"cannot write {path.name!r}: the file name must end in {', '.join(STATIC)} or {HTML}")
    if not path.parent.is_dir():
        state = "is not a directory" if path.parent.exists() else "does not exist"
        raise UserError(f"cannot write {path}: {path.parent} {state}")
    return "plotly" if suffix == HTML else "matplotlib"


def plot_front(frames: Frames, path: str | Path, x: str = "params", y: str = "kl") -> Path:
    """Candidates as points coloured by origin, each study's front as a step line, several studies on one plot.

    ``frames``: one DataFrame (grouped by its ``study`` column when it has one) or a mapping study -> DataFrame,
    e.g. ``StoreView.candidates`` or ``StoreView.front`` results. Rows without both values are left out.
    """
    backend = renderer(path)
    studies = {label: _plottable(frame, (x, y), also=("origin",)) for label, frame in _by_study(frames).items()}
    studies = {label: frame for label, frame in studies.items() if len(frame)}
    if not studies:
        raise UserError(f"nothing to plot: no candidate has held-out {x!r} and {y!r} values yet")
    origins = list(dict.fromkeys(origin for frame in studies.values() for origin in frame["origin"]))
    draw = _front_plotly if backend == "plotly" else _front_matplotlib
    draw(studies, origins, x, y, Path(path))
    return Path(path)


def plot_genome(levels: Sequence[int], units: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Levels per unit as a heat map: one column per layer, one row per part of a layer (attention, MLP, ...)."""
    backend = renderer(path)
    rows, columns, grid = genome_grid(levels, units)
    top = max(max(levels), 1)
    if backend == "plotly":
        import plotly.graph_objects as go

        figure = go.Figure(go.Heatmap(z=grid, x=columns, y=rows, zmin=0, zmax=top, colorscale="Viridis",
                                      colorbar={"title": "level"}, xgap=1, ygap=1))
        figure.update_layout(title=title, xaxis_title="layer", yaxis={"autorange": "reversed"})
        _write_html(figure, path)
    else:
        from matplotlib.colors import BoundaryNorm

        figure, axes = _figure(width=max(6.0, 0.3 * len(columns) + 2), height=1.2 + 0.45 * len(rows))
        image = axes.imshow(grid, aspect="auto", cmap="viridis",
                            norm=BoundaryNorm([level - 0.5 for level in range(top + 2)], 256))
        axes.set_xticks(range(len(columns)), [str(c) for c in columns], fontsize=7)
        axes.set_yticks(range(len(rows)), rows)
        axes.set_xlabel("layer")
        axes.set_title(title)
        figure.colorbar(image, ax=axes, ticks=range(top + 1), label="level (0 = dense)")
        figure.savefig(path, bbox_inches="tight")
    return Path(path)


def plot_hypervolume(frames: Frames, path: str | Path) -> Path:
    """Hypervolume against generation, one line per study: how far each search still moves its front."""
    backend = renderer(path)
    studies = {label: _plottable(frame, ("generation", "hypervolume")) for label, frame in _by_study(frames).items()}
    studies = {label: frame for label, frame in studies.items() if len(frame)}
    if not studies:
        raise UserError("nothing to plot: no hypervolume recorded")
    first = next(iter(studies.values()))
    label = f"hypervolume of ({', '.join(first['objectives'].iloc[0])})" if "objectives" in first else "hypervolume"
    if backend == "plotly":
        import plotly.graph_objects as go

        figure = go.Figure([go.Scatter(x=frame["generation"], y=frame["hypervolume"], mode="lines+markers", name=name)
                            for name, frame in studies.items()])
        figure.update_layout(xaxis_title="generation", yaxis_title=label)
        _write_html(figure, path)
    else:
        from matplotlib.ticker import MaxNLocator

        figure, axes = _figure()
        for (name, frame), marker in zip(studies.items(), cycle(MARKERS)):
            axes.plot(frame["generation"], frame["hypervolume"], marker=marker, label=name or None)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("generation")
        axes.set_ylabel(label)
        if len(studies) > 1:
            axes.legend()
        figure.savefig(path, bbox_inches="tight")
    return Path(path)


def genome_grid(levels: Sequence[int], units: Sequence[str]) -> tuple[list[str], list, list[list[float]]]:
    """(row labels, column labels, levels) of a genome laid out by layer index and part.

    Units named ``<prefix>.<layer>[.<part>]`` with one prefix (``model.layers.7.self_attn``) give one row per part
    and one column per layer; a missing (layer, part) cell is NaN. Any other naming gives one row, one unit a column.
    """
    if len(levels) != len(units):
        raise UserError(f"a genome of {len(levels)} levels does not fit {len(units)} units")
    matches = [UNIT.match(unit) for unit in units]
    if not all(matches) or len({m["prefix"] for m in matches}) != 1:
        return ["level"], list(range(len(units))), [[float(level) for level in levels]]
    rows = list(dict.fromkeys(m["part"] or "block" for m in matches))
    columns = sorted({int(m["index"]) for m in matches})
    grid = [[math.nan] * len(columns) for _ in rows]
    for match, level in zip(matches, levels, strict=True):
        grid[rows.index(match["part"] or "block")][columns.index(int(match["index"]))] = float(level)
    return rows, columns, grid


def front_steps(frame: pd.DataFrame, x: str, y: str) -> tuple[list[float], list[float]]:
    """The non-dominated points of a frame in increasing ``x``: the corners of the front's step line."""
    points = frame[[x, y]].to_numpy().tolist()
    corners = sorted(points[i] for i in non_dominated(points))
    return [p[0] for p in corners], [p[1] for p in corners]


def _by_study(frames: Frames) -> dict[str, pd.DataFrame]:
    if isinstance(frames, Mapping):
        return {str(label): frame for label, frame in frames.items()}
    if "study" in frames.columns:
        return {str(label): frame for label, frame in frames.groupby("study", sort=False)}
    return {"": frames}


def _plottable(frame: pd.DataFrame, values: tuple[str, ...], also: tuple[str, ...] = ()) -> pd.DataFrame:
    """The rows that have every one of ``values``; a UserError naming the first column the frame lacks."""
    missing = [c for c in (*values, *also) if c not in frame.columns]
    if missing:
        raise UserError(f"no column {missing[0]!r} to plot; the frame has {', '.join(map(str, frame.columns))}")
    return frame.dropna(subset=list(values))


def _y_scale(values: Sequence[float]) -> dict:
    """Logarithmic when the values span more than a decade (symmetric-log around 0 when a 0 is among them)."""
    positive = [v for v in values if v > 0]
    if len(positive) < 2 or max(positive) < 10 * min(positive) or min(values) < 0:
        return {"value": "linear"}
    if len(positive) < len(values):
        return {"value": "symlog", "linthresh": min(positive)}
    return {"value": "log"}


def _front_matplotlib(studies: dict[str, pd.DataFrame], origins: list[str], x: str, y: str, path: Path) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter

    colors = _origin_colors(origins)
    figure, axes = _figure()
    handles = []
    for (label, frame), marker, style in zip(studies.items(), cycle(MARKERS), cycle(LINESTYLES)):
        xs, ys = front_steps(frame, x, y)
        axes.step(xs, ys, where="post", color="0.35", linestyle=style, linewidth=1, zorder=1)
        for origin, group in frame.groupby("origin", sort=False):
            axes.scatter(group[x], group[y], color=colors[origin], marker=marker, s=28, zorder=2,
                         edgecolors="black", linewidths=0.4)
        if len(studies) > 1:
            handles.append(Line2D([], [], color="0.35", linestyle=style, marker=marker, label=label))
    handles += [Line2D([], [], color=colors[o], marker="o", linestyle="", label=o) for o in origins]
    axes.set_yscale(**_y_scale([v for frame in studies.values() for v in frame[y]]))
    axes.xaxis.set_major_formatter(EngFormatter())
    axes.set_xlabel(LABELS.get(x, x))
    axes.set_ylabel(LABELS.get(y, y))
    axes.grid(alpha=0.3)
    axes.legend(handles=handles, fontsize=8)
    figure.savefig(path, bbox_inches="tight")


def _front_plotly(studies: dict[str, pd.DataFrame], origins: list[str], x: str, y: str, path: Path) -> None:
    import plotly.graph_objects as go

    colors = _origin_colors(origins)
    figure = go.Figure()
    for (label, frame), marker, dash in zip(studies.items(), cycle(PLOTLY_MARKERS), cycle(PLOTLY_DASHES)):
        prefix = f"{label}: " if len(studies) > 1 else ""
        xs, ys = front_steps(frame, x, y)
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"shape": "hv", "color": "gray", "dash": dash},
                                    name=f"{prefix}front"))
        for origin, group in frame.groupby("origin", sort=False):
            hover = [f"candidate {c}" for c in group["candidate"]] if "candidate" in group else None
            figure.add_trace(go.Scatter(x=group[x], y=group[y], mode="markers", name=f"{prefix}{origin}",
                                        marker={"color": colors[origin], "symbol": marker, "size": 8}, text=hover))
    scale = _y_scale([v for frame in studies.values() for v in frame[y]])["value"]
    figure.update_layout(xaxis_title=LABELS.get(x, x), yaxis_title=LABELS.get(y, y),
                         yaxis_type="log" if scale == "log" else "linear")
    _write_html(figure, path)


def _origin_colors(origins: list[str]) -> dict[str, str]:
    """A stable colour per origin in order of appearance; any origin name works (baselines added later too)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = colormaps["tab10"].colors
    return {origin: to_hex(palette[i % len(palette)]) for i, origin in enumerate(origins)}


def _figure(width: float = 6.4, height: float = 4.4) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _write_html(figure, path: str | Path) -> None:
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)
