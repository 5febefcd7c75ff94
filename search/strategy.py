"""The ask/tell interface every strategy implements; strategies touch no model, no I/O and no Ray."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from paretopress.spaces.genome import Genome

CALIBRATION = "calibration"
HELDOUT = "heldout"


@dataclass(frozen=True)
class Trial:
    """One evaluation a strategy asks for: a genome on a set of samples, plus where the genome came from."""

    genome: Genome
    pool: str
    samples: tuple[int, ...]
    evaluators: tuple[str, ...]
    origin: str
    parent: Genome | None = None
    generation: int | None = None


class Strategy(ABC):
    """Proposes trials in batches; told the values, in order, before it is asked again.

    A strategy must be a deterministic function of its seed and the values it is told: resuming a study replays
    it from the start while the controller answers the trials already in the store.
    """

    @abstractmethod
    def ask(self) -> list[Trial]:
        """The next batch of trials; an empty list once the strategy is done."""

    @abstractmethod
    def tell(self, values: list[dict[str, float]]) -> None:
        """Values of the last batch, one dict per trial, in the order asked."""

    @property
    @abstractmethod
    def generation(self) -> int:
        """Generations completed so far."""

    @abstractmethod
    def front(self) -> list[tuple[Genome, float]]:
        """The genomes the strategy currently keeps as its best, with their latest KL: its front for hypervolume."""

    @abstractmethod
    def final(self) -> dict[str, Genome]:
        """What to confirm on held-out data once done, by label (the label is the origin of a genome not yet stored)."""
