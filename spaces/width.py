"""The width space: per decoder layer, how many KV groups of attention heads and how many FFN channels stay (ZipLM).

Units are every layer's attention and MLP, named like the depth space's sub-layer units. Level ``l`` of a unit keeps
``kept[unit][l]`` structures: level 0 keeps all of them, and a level that keeps none drops the sub-layer (the depth
space's stand-ins). The grid is the job's list of kept fractions, rounded to whole structures (FFN channels to a
multiple of ``multiple``).

The attention structure is a KV group: one key/value head with the query heads that read it. A KV head cannot go
while a query head still reads it, and removing query heads alone keeps the k/v projections and the KV cache whole
while breaking the equal number of query heads per KV head that grouped-query attention needs. Whole groups keep that
ratio, so a narrowed layer runs with the stock attention forward (it takes the head count from the tensors) and
a uniformly narrowed model is a stock config. The price is a coarse grid where KV heads are few (SmolLM2: 3).

Physically smaller matrices: the rows of q/k/v (gate/up) that produce a removed structure and the columns of o_proj
(down_proj) that read it are gone. The level database holds per unit the input projections' rows permuted into keep
order once, so every level's input projections are a prefix of them (a view of the memory-mapped file), and the
output projection of every partial level, corrected by structured OBS (``obs``) or merely cut (``magnitude``).

The budget is a time budget (``at_speedup``): a ``Limit`` on the units' measured times from a latency table.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from paretopress.kernel.errors import UserError
from paretopress.kernel.params import count_parameters
from paretopress.spaces.anatomy import Anatomy, fused_projections, read_anatomy
from paretopress.spaces.base import Space
from paretopress.spaces.budget import TimeTable
from paretopress.spaces.database import LevelDatabase
from paretopress.spaces.depth import keep_blocks, stub_sublayer
from paretopress.spaces.genome import Genome
from paretopress.spaces.pruned import ARCHITECTURES, DroppedAttention, DroppedMLP, record_layout
from paretopress.spaces.structured import columns, magnitude, structured_obs

WidthBuilder = Literal["obs", "magnitude"]
ATTENTION_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class Part:
    """One kind of prunable sub-layer: its inner structures, the linears producing them, the one reading them."""

    name: str  # attribute of a decoder layer ("self_attn", "mlp")
    inputs: tuple[tuple[str, int], ...]  # (linear attribute, its output rows per structure)
    output: str  # the linear reading the structures ("o_proj", "down_proj")
    size: int  # input columns of ``output`` per structure
    count: int  # structures of a dense layer
    signature: str  # what determines its latency besides the width: the latency table's module key
    norms: tuple[str, ...]  # norms that serve only this sub-layer (removed with it)


def attention_part(model: nn.Module, anatomy: Anatomy) -> Part:
    """KV groups of layer 0's attention: q rows per group = query heads per KV head x head_dim."""
    module = getattr(anatomy.layers(model)[0], anatomy.attention)
    if not all(isinstance(getattr(module, n, None), nn.Linear) for n in ATTENTION_LINEARS) or not hasattr(
            module, "head_dim"):
        raise UserError(f"width space: {type(model).__name__} has no attention with separate q/k/v/o projections "
                        f"and a head_dim ({type(module).__name__} has other parts), which this space needs")
    head_dim = module.head_dim
    kv_heads = module.k_proj.out_features // head_dim
    per_group = module.q_proj.out_features // kv_heads  # query rows per KV group
    hidden = module.q_proj.in_features
    bias = module.q_proj.bias is not None
    return Part(anatomy.attention, (("q_proj", per_group), ("k_proj", head_dim), ("v_proj", head_dim)), "o_proj",
                per_group, kv_heads,
                f"{type(module).__name__}(hidden={hidden},head_dim={head_dim},heads_per_kv={per_group // head_dim},"
                f"bias={bias})", anatomy.attention_norms)


def mlp_part(model: nn.Module, anatomy: Anatomy) -> Part:
    """FFN channels of layer 0's MLP: one row of gate/up and one column of down_proj each."""
    module = getattr(anatomy.layers(model)[0], anatomy.mlp)
    inputs = tuple((n, 1) for n in ("gate_proj", "up_proj") if isinstance(getattr(module, n, None), nn.Linear))
    if "up_proj" not in dict(inputs) or not isinstance(getattr(module, "down_proj", None), nn.Linear):
        raise UserError(f"width space: {type(model).__name__} has no MLP with up_proj and down_proj (and optionally "
                        f"gate_proj; {type(module).__name__} has other parts), which this space needs")
    down = module.down_proj
    act = type(getattr(module, "act_fn", None)).__name__
    return Part(anatomy.mlp, inputs, "down_proj", 1, down.in_features,
                f"{type(module).__name__}(hidden={down.out_features},act={act},gated={len(inputs) == 2},"
                f"bias={down.bias is not None})", anatomy.mlp_norms)


def kept_grid(fractions: list[float], count: int, multiple: int = 1) -> tuple[int, ...]:
    """Structures kept at each level, most first: the fractions rounded (to a multiple), plus all of them (level 0)."""
    if any(not 0 <= f <= 1 for f in fractions):
        raise UserError(f"kept fractions must lie between 0 and 1, not {fractions}")
    kept = {count} | {min(count, round(f * count / multiple) * multiple) for f in fractions}
    return tuple(sorted(kept, reverse=True))


class WidthSpace(Space):
    """Units: every layer's attention (KV groups kept) and MLP (channels kept), attention first."""

    kind = "width"

    def __init__(self, model: nn.Module, heads: list[float] | None, channels: list[float], builder: WidthBuilder,
                 multiple: int = 1) -> None:
        architecture = type(model).__name__
        self.anatomy = read_anatomy(model)
        first = self.anatomy.layers(model)[0]
        fused = [*fused_projections(getattr(first, self.anatomy.attention)),
                 *fused_projections(getattr(first, self.anatomy.mlp))]
        if fused:
            raise UserError(f"width space: {architecture} fuses {' and '.join(fused)}, which this space cannot cut")
        self.parts = (attention_part(model, self.anatomy), mlp_part(model, self.anatomy))
        if architecture not in ARCHITECTURES:  # the per-layer loader of exports covers these
            raise UserError(f"width space: {architecture} has no per-layer loader for its exports; supported: "
                            f"{', '.join(ARCHITECTURES)}")
        attention, mlp = self.parts
        heads = heads if heads is not None else [k / attention.count for k in range(attention.count + 1)]
        grids = (kept_grid(heads, attention.count), kept_grid(channels, mlp.count, multiple))
        if min(len(g) for g in grids) < 2:
            raise UserError(f"the width grid gives a sub-layer only one level ({grids}); add smaller fractions")
        self.builder, self.multiple = builder, multiple
        self.needs_calibration = builder == "obs"
        layers = range(self.anatomy.num_layers)
        self.units = tuple(f"{self.anatomy.layer_name(i)}.{part.name}" for i in layers for part in self.parts)
        self.kept = tuple(grids[u % 2] for u in range(len(self.units)))
        self.num_levels = tuple(len(k) for k in self.kept)
        self.switch_groups, self.group_targets = (), ()
        self.unit_params = tuple(self._level_params(model, u) for u in range(len(self.units)))
        self.total_params = count_parameters(model)
        self.database: LevelDatabase | None = None
        self.times: TimeTable | None = None
        self.speedup: float | None = None

    def part(self, index: int) -> Part:
        return self.parts[index % 2]

    def _level_params(self, model: nn.Module, index: int) -> tuple[int, ...]:
        """Parameters of the unit (its sub-layer and the norms only it uses) at every level."""
        part = self.part(index)
        layer = self.anatomy.layers(model)[index // 2]
        module = getattr(layer, part.name)
        dense = count_parameters(module) + sum(count_parameters(getattr(layer, n)) for n in part.norms)
        per_structure = sum(rows * (getattr(module, name).in_features + (getattr(module, name).bias is not None))
                            for name, rows in part.inputs) + getattr(module, part.output).out_features * part.size
        return tuple(dense - (part.count - k) * per_structure if k else 0 for k in self.kept[index])

    # -- budget --------------------------------------------------------------------------------------------------

    def latency_keys(self) -> tuple[tuple[tuple[str, int], ...], ...]:
        """Per unit and level, the latency-table key (module signature, structures kept) of its time."""
        return tuple(tuple((self.part(u).signature, k) for k in kept) for u, kept in enumerate(self.kept))

    def timed(self, times: TimeTable) -> WidthSpace:
        """This space with measured unit times (no budget yet); shares everything else."""
        other = copy.copy(self)
        other.times = times
        return other

    def at_speedup(self, speedup: float) -> WidthSpace:
        """This space under the time budget of ``speedup`` end to end on the table's device."""
        if self.times is None:
            raise RuntimeError("the width space has no latency table; call timed() first")
        limit = self.times.limit(speedup)
        if speedup <= 1 or not limit.fits([n - 1 for n in self.num_levels]):  # unit times fall with the level
            raise UserError(f"speedup {speedup:g} is not reachable with this width grid on {self.times.device}: "
                            f"it must lie above 1 and at most {self.times.fastest():.3f} (every sub-layer at its "
                            "narrowest)")
        other = copy.copy(self)
        other.speedup, other.limit = speedup, limit
        return other

    def at_speedups(self, speedups: list[float]) -> dict[str, WidthSpace]:
        """The space under each target by label suffix, like a depth sweep's: ``speedup=1.5``, none for one target."""
        if len(speedups) == 1:
            return {"": self.at_speedup(speedups[0])}
        return {f"speedup={s:g}": self.at_speedup(s) for s in speedups}

    def start(self) -> Genome:
        return self.uniform()

    def uniform(self) -> Genome:
        """Uniform width pruning: every attention at one width and every MLP at one width, the kept fractions as equal
        as the grids allow. Of the pairs within the limit, the one whose smaller kept fraction is largest (ties: the
        slower one), so that neither sub-layer is emptied while the other stays whole."""
        attention, mlp = self.kept[:2]
        pairs = [(a, m) for a in range(len(attention)) for m in range(len(mlp))]
        genomes = {pair: Genome(pair * self.anatomy.num_layers) for pair in pairs}
        feasible = [pair for pair in pairs if self.limit is None or self.limit.fits(genomes[pair].levels)]
        best = max(feasible, key=lambda pair: (min(attention[pair[0]] / attention[0], mlp[pair[1]] / mlp[0]),
                                               self.limit.total(genomes[pair].levels) if self.limit else 0))
        return genomes[best]

    def unit_blocks(self) -> tuple[int, ...]:
        return tuple(u // len(self.parts) for u in range(len(self.units)))

    def cost(self, genome: Genome) -> dict[str, float]:
        removed = sum(p[0] - p[level] for p, level in zip(self.unit_params, genome.levels, strict=True))
        cost = {"params": self.total_params - removed}
        if self.times is not None:
            cost["time"] = self.times.estimate(genome.levels)
            cost["speedup"] = self.times.dense / cost["time"]
        return cost

    def describe(self) -> dict:
        budget = {} if self.speedup is None else {
            "speedup": self.speedup, "time_budget": self.times.budget(self.speedup), "device": self.times.device}
        return {"kind": self.kind, "builder": self.builder, "kv_groups": list(self.kept[0]),
                "channels": list(self.kept[1]), **budget, "units": list(self.units)}

    # -- level database --------------------------------------------------------------------------------------------

    def identity(self) -> dict:
        return {"kind": self.kind, "builder": self.builder, "kept": self.kept}

    def calibration_inputs(self) -> tuple[str, ...]:
        return tuple(f"{unit}.{self.part(u).output}" for u, unit in enumerate(self.units))

    def attach(self, database: LevelDatabase) -> None:
        self.database = database

    def unit_levels(self, model: nn.Module, index: int, xtx: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Keep order, input-projection rows in keep order, and the output projection at every partial level; built
        where the model is (``xtx`` is there too)."""
        part, unit = self.part(index), self.units[index]
        module = model.get_submodule(unit)
        weight = getattr(module, part.output).weight.detach().float()
        kept = list(self.kept[index])
        pruned = (structured_obs(weight, xtx, part.size, kept) if self.builder == "obs"
                  else magnitude(weight, part.size, kept))
        stored = {f"{unit}.keep": torch.tensor(pruned.keep, device=weight.device)}
        for name, rows in part.inputs:
            linear, order = getattr(module, name), columns(pruned.keep, rows, weight.device)
            stored[f"{unit}.{name}.weight"] = linear.weight.detach()[order].contiguous()
            if linear.bias is not None:
                stored[f"{unit}.{name}.bias"] = linear.bias.detach()[order].contiguous()
        for level, k in enumerate(kept):
            if 0 < k < part.count:
                stored[f"{unit}.{part.output}.{level}"] = pruned.weights[k]
        return stored

    def _stored(self, name: str) -> torch.Tensor:
        if self.database is None:
            raise RuntimeError("width space has no level database attached")
        return self.database.tensor(name)

    # -- models ----------------------------------------------------------------------------------------------------

    @contextmanager
    def applied(self, model: nn.Module, genome: Genome) -> Iterator[nn.Module]:
        """Swap in narrowed projections (views of the database) and stand-ins for dropped sub-layers; undone on exit."""
        undo: list[tuple[nn.Module, str, nn.Module]] = []
        try:
            for index, level in enumerate(genome.levels):
                undo += self._narrow(model, index, level, copy=False)
            yield model
        finally:
            for parent, name, module in reversed(undo):
                setattr(parent, name, module)

    def materialise(self, model: nn.Module, genome: Genome) -> nn.Module:
        """Narrow the model for good (owned copies), remove blocks that lost both sub-layers, and describe the shapes
        in the config: a stock config when every layer kept the same widths, else a per-layer ``layer_layout``."""
        with torch.no_grad():
            for index, level in enumerate(genome.levels):
                self._narrow(model, index, level, copy=True)
        widths = [kept[level] for kept, level in zip(self.kept, genome.levels, strict=True)]
        kept_blocks = [b for b in range(self.anatomy.num_layers) if widths[2 * b] + widths[2 * b + 1]]
        keep_blocks(model, self.anatomy, kept_blocks)
        if not self._stock_config(model):
            record_layout(model, self.anatomy.layers_path)
        return model

    def _narrow(self, model: nn.Module, index: int, level: int, copy: bool) -> list[tuple[nn.Module, str, nn.Module]]:
        """Put unit ``index`` at ``level``; returns (parent, attribute, original module) to undo it."""
        part, kept = self.part(index), self.kept[index][level]
        layer = self.anatomy.layers(model)[index // 2]
        if kept == part.count:
            return []
        if kept == 0:
            return stub_sublayer(self.anatomy, layer, part.name)
        module, unit = getattr(layer, part.name), self.units[index]
        replacements = {}
        for name, rows in part.inputs:
            original = getattr(module, name)
            bias = self._stored(f"{unit}.{name}.bias")[:kept * rows] if original.bias is not None else None
            replacements[name] = _linear(self._stored(f"{unit}.{name}.weight")[:kept * rows], bias, copy)
        output = getattr(module, part.output)
        replacements[part.output] = _linear(self._stored(f"{unit}.{part.output}.{level}"), output.bias, copy)
        undo = [(module, name, getattr(module, name)) for name in replacements]
        for name, linear in replacements.items():
            setattr(module, name, linear.to(device=output.weight.device, dtype=output.weight.dtype))
        return undo

    def _stock_config(self, model: nn.Module) -> bool:
        """Write the widths into the stock config fields if every layer has the same ones; whether it could."""
        attention, mlp = self.parts
        shapes = set()
        for layer in self.anatomy.layers(model):
            attn, ffn = getattr(layer, attention.name), getattr(layer, mlp.name)
            if isinstance(attn, DroppedAttention) or isinstance(ffn, DroppedMLP):
                return False
            shapes.add((attn.q_proj.out_features, attn.k_proj.out_features, ffn.down_proj.in_features))
        if len(shapes) != 1:
            return False
        (queries, keys, channels), config = shapes.pop(), model.config
        head_dim = getattr(self.anatomy.layers(model)[0], attention.name).head_dim
        config.num_attention_heads, config.num_key_value_heads = queries // head_dim, keys // head_dim
        config.head_dim, config.intermediate_size = head_dim, channels
        return True

    def timing_variants(self, model: nn.Module) -> dict[tuple[str, int], list[tuple[nn.Module, str, nn.Module]]]:
        """For the latency table: per (module signature, structures kept) of the grid, the replacements that put that
        sub-layer at that width in every layer, each layer keeping its own first structures (so the weights stream
        through the caches as they do in a real model; one shared copy would stay cached and time too fast)."""
        variants = {}
        for part, kept in zip(self.parts, self.kept[:2], strict=True):
            for k in sorted({*kept, 0}, reverse=True):  # dropped: the reference the other widths are timed against
                variants[(part.signature, k)] = [
                    replacement for layer in self.anatomy.layers(model) for replacement in self._sliced(layer, part, k)]
        return variants

    @staticmethod
    def _sliced(layer: nn.Module, part: Part, kept: int) -> list[tuple[nn.Module, str, nn.Module]]:
        """(parent, attribute, module) putting ``layer``'s sub-layer at ``kept`` structures (its first ones)."""
        module = getattr(layer, part.name)
        if kept == part.count:
            return []
        if kept == 0:
            stub = DroppedAttention() if part.output == "o_proj" else DroppedMLP()
            return [(layer, part.name, stub), *((layer, norm, nn.Identity()) for norm in part.norms)]
        narrowed = copy.deepcopy(module)
        with torch.no_grad():
            for name, rows in part.inputs:
                linear = getattr(module, name)
                bias = linear.bias[:kept * rows] if linear.bias is not None else None
                setattr(narrowed, name, _linear(linear.weight[:kept * rows], bias, copy=True))
            output = getattr(module, part.output)
            setattr(narrowed, part.output, _linear(output.weight[:, :kept * part.size], output.bias, copy=True))
        return [(layer, part.name, narrowed)]


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, copy: bool) -> nn.Linear:
    """An ``nn.Linear`` holding these tensors (references, or owned copies with ``copy``); allocates nothing else."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight.detach().clone().contiguous() if copy else weight, requires_grad=False)
    if bias is not None:
        linear.bias = nn.Parameter(bias.detach().clone() if copy else bias, requires_grad=False)
    return linear
