"""A surrogate of the search's fitness, fitted on the study's own evaluations, to pre-screen offspring.

KL after compressing several units is close to additive in what each unit's level costs, with corrections where
neighbouring units interact (two adjacent blocks dropped hurt more than two far apart). So the model is linear in a
one-hot of each unit's level plus the products of adjacent units' levels, fitted by ridge regression; it touches no
model and costs microseconds, so generating many offspring and evaluating only the most promising pays for itself
as soon as its ranking is better than chance.
"""

from __future__ import annotations

import numpy as np

from paretopress.spaces.genome import Genome

RIDGE = 1e-2  # relative to the number of observations: keeps a fit on few genomes close to the mean


class AdditiveSurrogate:
    """Ridge regression of fitness on per-unit level indicators and adjacent-unit level products."""

    def __init__(self, num_levels: tuple[int, ...]) -> None:
        self.num_levels = num_levels
        self._genomes: list[Genome] = []
        self._fitness: list[float] = []
        self._weights: np.ndarray | None = None

    def features(self, genomes: list[Genome]) -> np.ndarray:
        """[genomes, features]: 1, one indicator per (unit, level > 0), and level products of adjacent units."""
        levels = np.array([g.levels for g in genomes], dtype=float)
        indicators = [levels[:, [unit]] == np.arange(1, n)[None, :] for unit, n in enumerate(self.num_levels)]
        pairs = levels[:, :-1] * levels[:, 1:]
        return np.hstack([np.ones((len(genomes), 1)), *indicators, pairs])

    def observe(self, genomes: list[Genome], fitness: list[float]) -> None:
        """Add measured genomes and refit."""
        self._genomes += genomes
        self._fitness += fitness
        x, y = self.features(self._genomes), np.array(self._fitness)
        penalty = RIDGE * len(y) * np.eye(x.shape[1])
        penalty[0, 0] = 0  # the intercept is not shrunk
        self._weights = np.linalg.solve(x.T @ x + penalty, x.T @ y)

    @property
    def ready(self) -> bool:
        return self._weights is not None

    def predict(self, genomes: list[Genome]) -> np.ndarray:
        return self.features(genomes) @ self._weights


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (ties broken by order; NaN for fewer than two values or no spread)."""
    if len(a) < 2:
        return float("nan")
    ranks = [np.argsort(np.argsort(np.asarray(v))) for v in (a, b)]
    if ranks[0].std() == 0 or ranks[1].std() == 0:
        return float("nan")
    return float(np.corrcoef(*ranks)[0, 1])
