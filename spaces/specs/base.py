"""What a space kind's job-file spec is: a closed pydantic section that builds its space and says what its budget is.

Spec modules import no torch: the job schema loads without it; ``build`` imports its space when it runs.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from paretopress.kernel.registry import Registry
from paretopress.kernel.spec import Closed

if TYPE_CHECKING:
    from torch import nn

    from paretopress.spaces.base import Space
    from paretopress.spaces.budget import TimeTable
    from paretopress.spaces.database import LevelSource
    from paretopress.spaces.genome import Genome
    from paretopress.spaces.specs.width import LatencySpec
    from paretopress.spaces.width import WidthSpace


class Inputs(Protocol):
    """What building a space needs beyond its spec; the application provides it (model, caches, the store)."""

    model: nn.Module

    def attach_levels(self, source: LevelSource, samples: int) -> None:
        """Give ``source`` its level database, built on ``samples`` calibration samples unless cached."""

    def time_table(self, space: WidthSpace, latency: LatencySpec) -> TimeTable:
        """The space's unit times on ``latency``'s device, from the store's latency table (measured if missing)."""


@dataclass(frozen=True)
class Relaxation:
    """Every budget up to the study's at once, for a strategy that searches a whole front (NSGA-II).

    ``violation(genome) > 0`` means the genome is over the study's budget; ``spaces`` are the space under budgets
    spread over the range, for drawing a first generation.
    """

    violation: Callable[[Genome], float]
    spaces: tuple[Space, ...]


class SpaceSpec(Closed):
    """The base of every space kind's spec."""

    kind: str
    whole_front: ClassVar[bool] = False  # whether ``relaxation`` gives every budget up to the spec's at once
    costs: ClassVar[tuple[str, ...]] = ("params",)  # the cost entries of ``Space.cost`` a front may be ranked by

    def has_cost(self, name: str) -> bool:
        """Whether ``Space.cost`` of this spec's space has the entry ``name``, so a front may be ranked by it."""
        return name in self.costs

    @abstractmethod
    def build(self, inputs: Inputs) -> Space:
        """The space: units, levels, exact costs, and its level database where it has one."""

    def budgeted(self, space: Space, inputs: Inputs) -> Space:
        """The space with what its budget needs that building alone does not give (a width space: its unit times).

        Called before a search and its baselines; export and plain building skip it.
        """
        return space

    def budget_spaces(self, space: Space) -> dict[str, Space]:
        """The space under each of the study's budgets, by label suffix (none when there is one budget)."""
        return {"": space}

    @abstractmethod
    def budget_text(self) -> str:
        """The budget in one short string (``drop=6``), for listings."""

    def whole_front_problem(self, strategy: str) -> str | None:
        """Why the whole-front ``strategy`` cannot search this spec, as a job-file error (None: it can)."""
        if self.whole_front:
            return None
        kinds = " and ".join(name for name, spec in SPACES.items() if spec.whole_front)
        return f"strategy.kind: {strategy} searches {kinds} spaces only, not {self.kind}; use evopress"

    def relaxation(self, space: Space) -> Relaxation:
        """Every budget up to this spec's, for whole-front strategies (kinds with ``whole_front``)."""
        raise NotImplementedError(f"{self.kind} spaces have no relaxation")


SPACES: Registry[type[SpaceSpec]] = Registry("space kind", default="depth")
