"""Several strategies side by side in one study: one job, one model and teacher cache, one front."""

from __future__ import annotations

from typing import TYPE_CHECKING

from paretopress.search.strategies.base import SearchReport, Strategy, Trial

if TYPE_CHECKING:
    from paretopress.spaces.genome import Genome


class Sweep(Strategy):
    """Runs strategies in lockstep and merges their batches, so workers stay busy across all of them.

    Each strategy sees exactly the trials and values it would see alone, so a sweep finds what separate runs with
    the same seeds find.
    """

    def __init__(self, strategies: dict[str, Strategy]) -> None:
        self.strategies = strategies
        self._asked: list[tuple[Strategy, int]] = []

    def ask(self) -> list[Trial]:
        trials: list[Trial] = []
        self._asked = []
        for strategy in self.strategies.values():
            batch = strategy.ask()
            if batch:
                self._asked.append((strategy, len(batch)))
                trials += batch
        return trials

    def tell(self, values: list[dict[str, float]]) -> None:
        start = 0
        for strategy, count in self._asked:
            strategy.tell(values[start:start + count])
            start += count

    @property
    def generation(self) -> int:
        return min(s.generation for s in self.strategies.values())

    def front(self) -> list[tuple[Genome, float]]:
        return [point for s in self.strategies.values() for point in s.front()]

    def final(self) -> dict[str, Genome]:
        return {f"{key} {label}": genome for label, s in self.strategies.items() for key, genome in s.final().items()}

    def report(self) -> dict[str, SearchReport]:
        return {label: report for label, s in self.strategies.items() for report in s.report().values()}


def one_or_sweep(runs: dict[str, Strategy]) -> Strategy:
    """The strategy of the one budget (labelled ``""``), or a sweep over the labelled budgets."""
    return runs[""] if "" in runs else Sweep(runs)
