"""Depth baselines: ShortGPT's block influence, the angular-distance window of Gromov et al., FinerCut's greedy path.

All three read the residual stream of the dense model on calibration samples and return, for each budget, which
units of a depth space to drop. They assume a pre-norm residual block (Llama, Mistral, Qwen2, Phi-3): the stream after
a block's attention is its input plus the attention's output.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import torch

from paretopress.search.baselines.base import Baseline, Calibration
from paretopress.spaces.depth import DepthSpace
from paretopress.spaces.genome import Genome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Residuals:
    """The residual stream [samples, seq, hidden] at every point a depth unit reads or writes.

    ``points[0]`` is the input of the first block and ``points[-1]`` the last block's output (before the final norm);
    block-wise, unit ``i`` maps ``points[i]`` to ``points[i + 1]``; sub-layer-wise, points alternate between block
    inputs and the stream after each attention, so unit ``i`` (attention, MLP, attention, ...) does the same.
    """

    points: list[torch.Tensor]

    def blocks(self) -> list[torch.Tensor]:
        return self.points[::2]


def residuals(space: DepthSpace, calibration: Calibration) -> Residuals:
    """One hooked pass of the dense model: block inputs, attention outputs, and the last block's output."""
    anatomy, model = space.anatomy, calibration.model
    layers = anatomy.layers(model)
    inputs: list[list[torch.Tensor]] = [[] for _ in layers]
    attention: list[list[torch.Tensor]] = [[] for _ in layers]
    last: list[torch.Tensor] = []

    def on_input(index: int):
        def hook(_module, args, kwargs):
            inputs[index].append((args[0] if args else kwargs["hidden_states"]).float())
        return hook

    def on_attention(index: int):
        def hook(_module, _args, output):
            attention[index].append((output[0] if isinstance(output, tuple) else output).float())
        return hook

    def on_last(_module, _args, output):
        last.append((output[0] if isinstance(output, tuple) else output).float())

    handles = [layer.register_forward_pre_hook(on_input(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles += [getattr(layer, anatomy.attention).register_forward_hook(on_attention(i))
                for i, layer in enumerate(layers)]
    handles.append(layers[-1].register_forward_hook(on_last))
    try:
        with torch.inference_mode():
            for batch in calibration.batches():
                model(input_ids=batch, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    block_inputs = [torch.cat(chunks) for chunks in inputs]
    after_attention = [x + torch.cat(a) for x, a in zip(block_inputs, attention, strict=True)]
    points = [p for pair in zip(block_inputs, after_attention, strict=True) for p in pair]
    return Residuals([*points, torch.cat(last)])


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per token over the hidden dimension."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def drop(space: DepthSpace, units: list[int]) -> Genome:
    """The genome dropping exactly ``units``."""
    chosen = set(units)
    return Genome(tuple(int(i in chosen) for i in range(len(space.units))))


class ShortGPT(Baseline):
    """Drop the units of lowest block influence BI = mean over tokens of 1 - cos(stream in, stream out)."""

    def influence(self, space: DepthSpace, calibration: Calibration) -> list[float]:
        stream = residuals(space, calibration)
        points = stream.blocks() if space.granularity == "block" else stream.points
        return [float((1 - cosine(a, b)).mean()) for a, b in itertools.pairwise(points)]

    def propose(self, spaces: list[DepthSpace], calibration: Calibration) -> list[Genome]:
        scores = self.influence(spaces[0], calibration)
        order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
        return [drop(space, order[:space.drop]) for space in spaces]


class Angular(Baseline):
    """Drop the contiguous window of n blocks whose input and output are closest in angular distance.

    As in Gromov et al., the distance arccos(cos) / pi is taken at the last token of each sample, averaged over
    samples. Blocks only: a window of sub-layers has no counterpart in the paper.
    """

    def propose(self, spaces: list[DepthSpace], calibration: Calibration) -> list[Genome]:
        last = [p[:, -1] for p in residuals(spaces[0], calibration).blocks()]
        genomes = []
        for space in spaces:
            n = space.drop
            distance = [float(torch.arccos(cosine(last[s], last[s + n]).clamp(-1, 1)).mean() / torch.pi)
                        for s in range(len(last) - n)]
            start = min(range(len(distance)), key=lambda s: (distance[s], s))
            genomes.append(drop(space, list(range(start, start + n))))
        return genomes


class FinerCut(Baseline):
    """Greedily remove the unit whose removal (on top of those already removed) changes the output least (JS).

    The removal path is nested, so one run to the largest budget yields the genome of every smaller budget.
    Costs one calibration pass per unit tried: about units x budget passes.
    """

    def path(self, space: DepthSpace, calibration: Calibration, length: int) -> list[int]:
        units = len(space.units)
        passes = sum(units - step for step in range(length)) + 1  # every unit left, at every step; the dense pass
        log.info("finercut: %d removals will cost %d calibration passes over %s tokens (%s tokens in all)", length,
                 passes, f"{calibration.tokens.numel():,}", f"{passes * calibration.tokens.numel():,}")
        removed: list[int] = []
        for _ in range(length):
            remaining = [u for u in range(len(space.units)) if u not in removed]
            scores = {u: calibration.divergence(space, drop(space, [*removed, u])) for u in remaining}
            removed.append(min(remaining, key=lambda u: (scores[u], u)))
            log.info("finercut: removed %s (%d of %d), JS %.4g", space.units[removed[-1]], len(removed), length,
                     scores[removed[-1]])
        return removed

    def propose(self, spaces: list[DepthSpace], calibration: Calibration) -> list[Genome]:
        order = self.path(spaces[0], calibration, max(s.drop for s in spaces))
        return [drop(space, order[:space.drop]) for space in spaces]
