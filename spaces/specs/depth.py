"""``kind: depth``: drop whole blocks, or attention and MLP sub-layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import field_validator

from paretopress.spaces.specs.base import SPACES, Inputs, Relaxation, SpaceSpec

if TYPE_CHECKING:
    from paretopress.spaces.depth import DepthSpace


@SPACES.register("depth")
class DepthSpaceSpec(SpaceSpec):
    """Drop ``drop`` whole blocks, or ``drop`` attention/MLP sub-layers with ``granularity: sublayer``.

    A list of budgets makes EvoPress sweep them in one job; for NSGA-II, ``drop`` is the most it may drop.
    """

    kind: Literal["depth"] = "depth"
    granularity: Literal["block", "sublayer"] = "block"
    drop: int | list[int]
    whole_front: ClassVar[bool] = True

    @field_validator("drop")
    @classmethod
    def _budgets_positive_and_distinct(cls, drop: int | list[int]) -> int | list[int]:
        budgets = drop if isinstance(drop, list) else [drop]
        if any(d < 1 for d in budgets):
            raise ValueError(f"must be at least 1, not {drop}")
        if len(set(budgets)) != len(budgets) or not budgets:
            raise ValueError(f"budgets must be distinct and not empty: {drop}")
        return drop

    @property
    def budgets(self) -> list[int]:
        return self.drop if isinstance(self.drop, list) else [self.drop]

    def build(self, inputs: Inputs) -> DepthSpace:
        """The space at its largest budget (every smaller one is valid too: ``at_budget``)."""
        from paretopress.spaces.depth import DepthSpace

        return DepthSpace(inputs.model, self.granularity, max(self.budgets))

    def budget_spaces(self, space: DepthSpace) -> dict[str, DepthSpace]:
        if len(self.budgets) == 1:
            return {"": space.at_budget(self.budgets[0])}
        return {f"drop={d}": space.at_budget(d) for d in self.budgets}

    def budget_text(self) -> str:
        return f"drop={self.drop}"

    def whole_front_problem(self, strategy: str) -> str | None:
        if len(self.budgets) > 1:
            return f"space.drop: {strategy} explores every budget up to it; give one number, not a list"
        return None

    def relaxation(self, space: DepthSpace) -> Relaxation:
        """Every number of dropped units from 1 to the budget."""
        return Relaxation(lambda genome: space.cost(genome)["dropped"] - space.drop,
                          tuple(space.at_budget(d) for d in range(1, space.drop + 1)))
