"""``kind: width``: KV groups of attention and FFN channels kept per layer, under a measured time budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from paretopress.kernel.spec import Closed
from paretopress.spaces.specs.base import SPACES, Inputs, Relaxation, SpaceSpec

if TYPE_CHECKING:
    from paretopress.spaces.width import WidthSpace

DEFAULT_CHANNELS = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0)
DEFAULT_MULTIPLE = 8


class LatencySpec(Closed):
    """Where the latency table behind a speedup target is measured: device, dtype, and the batch x sequence length
    of a prefill pass; ``threads`` CPU threads (default: torch's), ``repeats`` timed rounds (median)."""

    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch: int = Field(1, ge=1)
    seq: int = Field(128, ge=1)
    threads: int | None = Field(None, ge=1)
    repeats: int = Field(30, ge=1)


@SPACES.register("width")
class WidthSpaceSpec(SpaceSpec):
    """KV groups of attention heads and FFN channels kept per layer, searched under a time budget: ``speedup``
    (one target, or a list for one EvoPress run each) measured against the dense model on ``latency``'s device.

    ``heads`` and ``channels`` are the kept fractions that form each sub-layer's levels (1.0 is always one; 0 drops
    the sub-layer); channels are rounded to a multiple of ``multiple``. ``builder``: structured OBS on
    ``calibration_samples`` calibration samples, or magnitude.
    """

    kind: Literal["width"]
    speedup: float | list[float]
    heads: list[float] | None = None  # default: every number of KV groups
    channels: list[float] = Field(default_factory=lambda: list(DEFAULT_CHANNELS))
    multiple: int = Field(DEFAULT_MULTIPLE, ge=1)
    builder: Literal["obs", "magnitude"] = "obs"
    calibration_samples: int = Field(32, ge=1)
    latency: LatencySpec = Field(default_factory=LatencySpec)
    whole_front: ClassVar[bool] = True
    costs: ClassVar[tuple[str, ...]] = ("params", "time")

    @field_validator("speedup")
    @classmethod
    def _speedups_above_one_and_distinct(cls, speedup: float | list[float]) -> float | list[float]:
        targets = speedup if isinstance(speedup, list) else [speedup]
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f"speedup targets must be distinct and not empty: {speedup}")
        if any(t <= 1 for t in targets):
            raise ValueError(f"a speedup target must be above 1 (1.5 = 1.5x faster), not {speedup}")
        return speedup

    @property
    def speedups(self) -> list[float]:
        return self.speedup if isinstance(self.speedup, list) else [self.speedup]

    def build(self, inputs: Inputs) -> WidthSpace:
        """The space without a time budget: that comes from the store's latency table (``budgeted``)."""
        from paretopress.spaces.width import WidthSpace

        width = WidthSpace(inputs.model, self.heads, self.channels, self.builder, self.multiple)
        inputs.attach_levels(width, self.calibration_samples)
        return width

    def budgeted(self, space: WidthSpace, inputs: Inputs) -> WidthSpace:
        """The space with its unit times; an unreachable target fails here, before the study is written."""
        timed = space.timed(inputs.time_table(space, self.latency))
        for speedup in self.speedups:
            timed.at_speedup(speedup)
        return timed

    def budget_spaces(self, space: WidthSpace) -> dict[str, WidthSpace]:
        return space.at_speedups(self.speedups)

    def budget_text(self) -> str:
        return f"speedup={self.speedup}"

    def relaxation(self, space: WidthSpace) -> Relaxation:
        """Any genome at least as fast as the smallest target; first genomes drawn under every target."""
        limit = space.at_speedup(min(self.speedups)).limit
        return Relaxation(lambda genome: limit.total(genome.levels) - limit.bound,
                          tuple(space.at_speedup(s) for s in self.speedups))
