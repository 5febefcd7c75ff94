"""Baselines for spaces of linear layers: the uniform configuration and OWL's outlier-weighted layerwise sparsity."""

from __future__ import annotations

import torch

from paretopress.search.baselines.base import Baseline, Calibration
from paretopress.spaces.anatomy import read_anatomy
from paretopress.spaces.genome import Genome
from paretopress.spaces.linear import LinearSpace
from paretopress.spaces.sparsity import SparsitySpace


class Uniform(Baseline):
    """Every unit at the same level, or the closest genome that meets the budget exactly (levels differ by one)."""

    def propose(self, spaces: list[LinearSpace], calibration: Calibration) -> list[Genome]:
        return [space.uniform() for space in spaces]


class OWL(Baseline):
    """Outlier-weighted layerwise sparsity (Yin et al.): blocks with more outlier weights keep more of them.

    A_ij = |W_ij| * ||X_j||_2 over the block's linears; D_l = the share of A above ``m`` times its block mean; D is
    rescaled to [0, 2 * lam] and density_l = D_l - mean(D) + (1 - S). Every linear of block l then targets sparsity
    1 - density_l, snapped to the space's level grid with the total kept exact (``Space.nearest``).
    """

    def __init__(self, m: float = 5.0, lam: float = 0.08) -> None:
        self.m, self.lam = m, lam

    def block_sparsity(self, space: SparsitySpace, calibration: Calibration) -> list[float]:
        """The target sparsity of every decoder block, from the outlier ratios of its linears."""
        blocks = unit_blocks(space, calibration.model)
        squares = calibration.statistic(space.calibration_inputs(), lambda x: x.square().sum(0))
        scores = [space.dense_weight(calibration.model, i).detach().float().abs()
                  * squares[space.members[i][0]].sqrt() for i in range(len(space.units))]
        ratios = [outlier_ratio([scores[i] for i, b in enumerate(blocks) if b == block], self.m)
                  for block in sorted(set(blocks))]
        return layer_sparsity(ratios, space.sparsity, self.lam)

    def propose(self, spaces: list[SparsitySpace], calibration: Calibration) -> list[Genome]:
        genomes = []
        for space in spaces:
            sparsity = self.block_sparsity(space, calibration)
            blocks = unit_blocks(space, calibration.model)
            targets = [(sparsity[b] * space.numels[i] - space.removed[i][0]) / space.step
                       for i, b in enumerate(blocks)]
            genomes.append(space.nearest(targets))
        return genomes


def unit_blocks(space: LinearSpace, model) -> list[int]:
    """The decoder block of every unit, by the name of its first member."""
    anatomy = read_anatomy(model)
    prefix = f"{anatomy.layers_path}."
    return [int(group[0][len(prefix):].split(".")[0]) for group in space.members]


def outlier_ratio(scores: list[torch.Tensor], m: float) -> float:
    """The share of a block's scores A (all its linears together) above ``m`` times their mean."""
    flat = torch.cat([s.flatten() for s in scores]).double()
    return float((flat > m * flat.mean()).double().mean())


def layer_sparsity(ratios: list[float], sparsity: float, lam: float) -> list[float]:
    """OWL's per-block sparsity: ratios rescaled to [0, 2 * lam], centred, so the mean sparsity stays ``sparsity``."""
    ratio = torch.tensor(ratios, dtype=torch.float64, device="cpu")  # a few numbers, wherever the model is
    spread = ratio.max() - ratio.min()
    scaled = (ratio - ratio.min()) / spread * 2 * lam if spread > 0 else torch.zeros_like(ratio)
    return [float(sparsity - d) for d in scaled - scaled.mean()]
