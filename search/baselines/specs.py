"""Every one-shot baseline's job-file spec: its own settings, the space kinds it applies to, and how it is built.

One small class per baseline, registered by method name. This module imports no torch (the job schema loads
without it); ``build`` imports the baseline's implementation when it runs.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import ConfigDict, Field

from paretopress.kernel.registry import Registry
from paretopress.kernel.spec import Closed

if TYPE_CHECKING:
    from paretopress.search.baselines.base import Baseline
    from paretopress.spaces.specs import SpaceSpec


class BaselineSpec(Closed):
    """A one-shot baseline; its genome at every budget of the study lands as a candidate named after the method.

    ``samples`` calibration samples of ``evaluation.seq_len`` tokens feed it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    method: str
    samples: int = Field(8, ge=1)
    applies_to: ClassVar[tuple[str, ...]]  # the space kinds it proposes genomes for
    cheap: ClassVar[bool] = True  # a few passes over its samples: a search seeds itself with it unless told not to

    def problem_with(self, space_spec: SpaceSpec) -> str | None:
        """Why this baseline cannot propose genomes for ``space_spec`` (None: it can)."""
        if space_spec.kind not in self.applies_to:
            return f"{self.method} applies to {' and '.join(self.applies_to)} spaces, not {space_spec.kind}"
        return None

    def settings(self) -> dict:
        """What determines the baseline's genomes: its identity in the store."""
        return self.model_dump(mode="json")

    @abstractmethod
    def build(self) -> Baseline:
        """The baseline with these settings."""


BASELINES: Registry[type[BaselineSpec]] = Registry("baseline", tag="method")


@BASELINES.register("uniform")
class UniformSpec(BaselineSpec):
    method: Literal["uniform"] = "uniform"
    applies_to = ("sparsity", "quant", "gguf")

    def build(self) -> Baseline:
        from paretopress.search.baselines.linear import Uniform

        return Uniform()


@BASELINES.register("owl")
class OWLSpec(BaselineSpec):
    """``m`` and ``lambda``: OWL's outlier threshold and the half-width of its layerwise sparsity range."""

    method: Literal["owl"] = "owl"
    m: float = Field(5.0, gt=0)
    lam: float = Field(0.08, ge=0, lt=0.5, alias="lambda")
    applies_to = ("sparsity",)

    def build(self) -> Baseline:
        from paretopress.search.baselines.linear import OWL

        return OWL(self.m, self.lam)


@BASELINES.register("shortgpt")
class ShortGPTSpec(BaselineSpec):
    method: Literal["shortgpt"] = "shortgpt"
    applies_to = ("depth",)

    def build(self) -> Baseline:
        from paretopress.search.baselines.depth import ShortGPT

        return ShortGPT()


@BASELINES.register("angular")
class AngularSpec(BaselineSpec):
    method: Literal["angular"] = "angular"
    applies_to = ("depth",)

    def problem_with(self, space_spec: SpaceSpec) -> str | None:
        if space_spec.kind == "depth" and space_spec.granularity != "block":
            return "angular drops windows of whole blocks; use granularity: block"
        return super().problem_with(space_spec)

    def build(self) -> Baseline:
        from paretopress.search.baselines.depth import Angular

        return Angular()


@BASELINES.register("finercut")
class FinerCutSpec(BaselineSpec):
    method: Literal["finercut"] = "finercut"
    applies_to = ("depth",)
    cheap = False  # one pass per removal it tries: 235 passes at 6 of 30 blocks

    def build(self) -> Baseline:
        from paretopress.search.baselines.depth import FinerCut

        return FinerCut()


@BASELINES.register("spdy")
class SPDYSpec(BaselineSpec):
    method: Literal["spdy"] = "spdy"
    applies_to = ("depth", "sparsity", "quant", "gguf", "width")

    def build(self) -> Baseline:
        from paretopress.search.baselines.spdy import SPDY

        return SPDY()
