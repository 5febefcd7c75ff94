"""The ask/tell interface every strategy implements, and the job-file spec every strategy kind registers.

Strategies touch no model, no I/O and no Ray, and import no torch: their specs load with the job schema.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paretopress.kernel.registry import Registry
from paretopress.kernel.spec import Closed

if TYPE_CHECKING:
    from paretopress.search.baselines.specs import BaselineSpec
    from paretopress.spaces.base import Space
    from paretopress.spaces.genome import Genome
    from paretopress.spaces.specs import SpaceSpec


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

    fitness: str = "kl"  # the evaluator ``front`` reports

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
        """The genomes the strategy currently keeps as its best, with their latest fitness: its front."""

    @abstractmethod
    def final(self) -> dict[str, Genome]:
        """What to confirm on held-out data once done, by label (the label is the origin of a genome not yet stored)."""

    def report(self) -> dict[str, SearchReport]:
        """What the search measured about itself once done, by budget label ("" for a single budget)."""
        return {}


@dataclass(frozen=True)
class Noise:
    """How noisy the search's fitness was where it decided, beside what the search gained: the final genome and the
    start scored on the same ``draws`` fresh minibatches of ``samples`` calibration samples each."""

    samples: int
    draws: int
    fitness: float  # the final genome's mean fitness over the draws
    sd: float  # its standard deviation from draw to draw: the noise one selection step sees
    gain: float  # the start's fitness minus the final genome's, paired draw by draw, averaged
    gain_sd: float  # that difference's standard deviation from draw to draw

    def __str__(self) -> str:
        return (f"fitness {self.fitness:.4f} +- {self.sd:.4f} ({100 * self.sd / self.fitness:.1f}%) over {self.draws} "
                f"minibatches of {self.samples} samples; gain over the start {self.gain:+.4f} +- {self.gain_sd:.4f}")


@dataclass(frozen=True)
class SearchReport:
    """What a strategy measured about its own search, for the user to judge its decisions by."""

    noise: Noise | None = None
    surrogate: tuple[float, ...] = ()  # per generation: the pre-screening's rank correlation with measured fitness

    def lines(self) -> list[str]:
        lines = [] if self.noise is None else [f"search noise: {self.noise}"]
        if self.surrogate:
            shown = " ".join(f"{value:.2f}" for value in self.surrogate)
            lines.append(f"surrogate rank correlation with the first stage, per generation: {shown}")
        return lines


@dataclass(frozen=True)
class SearchSetting:
    """What every strategy reads of the study besides its own spec."""

    seed: int
    seq_len: int  # tokens per sample
    pool_size: int  # calibration samples to draw from


class StrategySpec(Closed):
    """The base of every strategy kind's spec: validates itself against the space and builds the strategy."""

    kind: str
    generations: int

    @abstractmethod
    def build(self, space: Space, space_spec: SpaceSpec, setting: SearchSetting,
              starts: list[list[Genome]] | None = None) -> Strategy:
        """The strategy over ``space`` (budgeted); ``starts`` holds, per budget in ``space_spec.budget_spaces``
        order, the genomes of ``start_baselines`` (in that order), for strategies that start from baselines."""

    @abstractmethod
    def scoring_tokens(self) -> list[int]:
        """Calibration tokens of each kind of scoring the strategy asks for (they must fit the pool)."""

    def problem_with(self, space_spec: SpaceSpec) -> str | None:
        """Why this strategy cannot search ``space_spec``, as a job-file error (None: it can)."""
        return None

    def start_baselines(self, space_spec: SpaceSpec) -> list[str | BaselineSpec]:
        """The baselines whose genomes the search starts from, by method name or with their settings."""
        return []

    def identity(self, starts: list[BaselineSpec]) -> dict:
        """What of this spec identifies the study, ``starts`` being ``start_baselines`` with their settings (they
        change the search, so their settings are part of the study, unlike the job's other baselines)."""
        return self.model_dump(mode="json")


STRATEGIES: Registry[type[StrategySpec]] = Registry("strategy kind", default="evopress")
