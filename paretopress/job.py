"""The job file: a validated, closed schema (unknown keys are errors), loaded from YAML as plain data."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from paretopress.errors import UserError


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DepthSpaceSpec(Closed):
    """Drop ``drop`` whole blocks, or ``drop`` attention/MLP sub-layers with ``granularity: sublayer``.

    A list of budgets makes EvoPress sweep them in one job; for NSGA-II, ``drop`` is the most it may drop.
    """

    kind: Literal["depth"] = "depth"
    granularity: Literal["block", "sublayer"] = "block"
    drop: int | list[int]

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


class SparsitySpaceSpec(Closed):
    """Unstructured sparsity per decoder linear at an exact average ``sparsity`` (0.5 = half the weights removed).

    Levels are up to ``levels`` steps of ``step`` removed weights either side of ``sparsity``, never below 0% or
    above 100% per layer (``step`` defaults to what lets a median-sized layer span that whole range);
    ``calibration_samples`` calibration samples of ``evaluation.seq_len`` tokens feed Wanda and SparseGPT.
    """

    kind: Literal["sparsity"] = "sparsity"
    sparsity: float
    builder: Literal["magnitude", "wanda", "sparsegpt"] = "wanda"
    levels: int = Field(4, ge=1, le=100)
    step: int | None = Field(None, ge=1)
    calibration_samples: int = Field(32, ge=1)
    tie: bool = False  # q/k/v and gate/up share one level (runtimes fuse them)


class QuantSpaceSpec(Closed):
    """A bit-width per decoder linear at an average of ``bits`` bits per weight (scales and zero points counted).

    ``widths`` are the bit-widths to choose from (2 to 8, and 16 for unquantized), quantized group-wise
    (``group_size`` input columns share a float16 scale and an integer zero point) by round-to-nearest or GPTQ.
    Evenly spaced widths below 16 give every genome exactly the same budget; others keep each genome at most at it.
    """

    kind: Literal["quant"] = "quant"
    bits: float
    widths: list[int] = Field(default_factory=lambda: [2, 3, 4, 5, 6])
    group_size: int = Field(128, ge=1)
    builder: Literal["rtn", "gptq"] = "gptq"
    calibration_samples: int = Field(32, ge=1)
    tie: bool = False  # q/k/v and gate/up share one bit-width (runtimes fuse them)


class JointSpaceSpec(Closed):
    """Two or three of depth, sparsity and quant in one genome, each with its own exact budget.

    ``depth.drop`` must be one number here. The sparsity and quant budgets are averages over every decoder linear,
    dropped blocks included; the cost of each candidate (parameters, bytes) counts only what it keeps. Sparsity next
    to quant masks each quantized weight, so its builder must give masks (magnitude or wanda).
    """

    kind: Literal["joint"]
    depth: DepthSpaceSpec | None = None
    quant: QuantSpaceSpec | None = None
    sparsity: SparsitySpaceSpec | None = None

    @model_validator(mode="after")
    def _two_components(self) -> JointSpaceSpec:
        if sum(c is not None for c in (self.depth, self.quant, self.sparsity)) < 2:
            raise ValueError("a joint space needs at least two of depth, sparsity and quant")
        if self.depth is not None and isinstance(self.depth.drop, list):
            raise ValueError("depth.drop: a joint space takes one budget, not a list")
        if self.quant is not None and self.sparsity is not None and self.sparsity.builder == "sparsegpt":
            raise ValueError("sparsity.builder: next to quant, sparsity needs mask levels (magnitude or wanda), "
                             "not sparsegpt")
        return self

    @property
    def linears(self) -> list[QuantSpaceSpec | SparsitySpaceSpec]:
        """The per-linear components present, sparsity first."""
        return [c for c in (self.sparsity, self.quant) if c is not None]


class LatencySpec(Closed):
    """Where the latency table behind a speedup target is measured: device, dtype, and the batch x sequence length
    of a prefill pass; ``threads`` CPU threads (default: torch's), ``repeats`` timed rounds (median)."""

    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch: int = Field(1, ge=1)
    seq: int = Field(128, ge=1)
    threads: int | None = Field(None, ge=1)
    repeats: int = Field(30, ge=1)


class WidthSpaceSpec(Closed):
    """KV groups of attention heads and FFN channels kept per layer, searched under a time budget: ``speedup``
    (one target, or a list for one EvoPress run each) measured against the dense model on ``latency``'s device.

    ``heads`` and ``channels`` are the kept fractions that form each sub-layer's levels (1.0 is always one; 0 drops
    the sub-layer); channels are rounded to a multiple of ``multiple``. ``builder``: structured OBS on
    ``calibration_samples`` calibration samples, or magnitude.
    """

    kind: Literal["width"]
    speedup: float | list[float]
    heads: list[float] | None = None  # default: every number of KV groups
    channels: list[float] = Field(default_factory=lambda: [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0])
    multiple: int = Field(8, ge=1)
    builder: Literal["obs", "magnitude"] = "obs"
    calibration_samples: int = Field(32, ge=1)
    latency: LatencySpec = Field(default_factory=LatencySpec)

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


SPACES = {"depth": DepthSpaceSpec, "sparsity": SparsitySpaceSpec, "quant": QuantSpaceSpec, "joint": JointSpaceSpec,
          "width": WidthSpaceSpec}
BUDGET_KEYS = {"depth": "drop", "sparsity": "sparsity", "quant": "bits", "width": "speedup"}


def budget_text(space: dict) -> str:
    """A stored space spec's budget in one short string (``drop=6``; ``drop=4, bits=3.0`` for joint spaces)."""
    if space.get("kind", "depth") == "joint":
        return ", ".join(budget_text({"kind": kind, **space[kind]}) for kind in ("depth", "sparsity", "quant")
                         if space.get(kind))
    key = BUDGET_KEYS[space.get("kind", "depth")]
    return f"{key}={space.get(key)}"


def _space_kind(value: Any) -> str | None:
    """The space's tag; ``kind`` may be left out for depth, the default."""
    return value.get("kind", "depth") if isinstance(value, dict) else getattr(value, "kind", None)


SpaceSpec = Annotated[
    Annotated[DepthSpaceSpec, Tag("depth")] | Annotated[SparsitySpaceSpec, Tag("sparsity")]
    | Annotated[QuantSpaceSpec, Tag("quant")] | Annotated[JointSpaceSpec, Tag("joint")]
    | Annotated[WidthSpaceSpec, Tag("width")],
    Discriminator(_space_kind),
]


BaselineMethod = Literal["uniform", "owl", "shortgpt", "angular", "finercut", "spdy"]
BASELINE_SPACES: dict[str, tuple[str, ...]] = {  # which space kinds each one-shot baseline applies to
    "uniform": ("sparsity", "quant"),
    "owl": ("sparsity",),
    "shortgpt": ("depth",),
    "angular": ("depth",),
    "finercut": ("depth",),
    "spdy": ("depth", "sparsity", "quant", "width"),
}


class BaselineSpec(Closed):
    """A one-shot baseline; its genome at every budget of the study lands as a candidate named after the method.

    ``samples`` calibration samples of ``evaluation.seq_len`` tokens feed it; ``m`` and ``lambda`` are OWL's outlier
    threshold and the half-width of its layerwise sparsity range.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    method: BaselineMethod
    samples: int = Field(8, ge=1)
    m: float = Field(5.0, gt=0)
    lam: float = Field(0.08, ge=0, lt=0.5, alias="lambda")

    @model_validator(mode="after")
    def _owl_settings_for_owl(self) -> BaselineSpec:
        if self.method != "owl" and {"m", "lam"} & self.model_fields_set:
            raise ValueError(f"m and lambda are settings of owl, not of {self.method}")
        return self

    def settings(self) -> dict:
        """What determines the baseline's genomes (OWL's own settings only for OWL): its identity in the store."""
        return self.model_dump(mode="json", exclude=None if self.method == "owl" else {"m", "lam"})


class StageSpec(Closed):
    """One selection stage: score the remaining candidates on ``tokens`` fresh tokens, keep ``survivors``."""

    survivors: int = Field(ge=1)
    tokens: int = Field(ge=1)


def _default_stages() -> list[StageSpec]:
    return [StageSpec(survivors=2, tokens=1024), StageSpec(survivors=1, tokens=4096)]


class EvoPressSpec(Closed):
    kind: Literal["evopress"] = "evopress"
    generations: int = Field(20, ge=1)
    offspring: int = Field(8, ge=1)
    stages: list[StageSpec] = Field(default_factory=_default_stages, min_length=1)
    warm_start: BaselineMethod | None = None

    @model_validator(mode="after")
    def _stages_narrow_to_one(self) -> EvoPressSpec:
        survivors = [s.survivors for s in self.stages]
        if survivors[0] > self.offspring:
            raise ValueError(f"first stage keeps {survivors[0]} survivors but only {self.offspring} offspring exist")
        if any(b > a for a, b in itertools.pairwise(survivors)):
            raise ValueError(f"stage survivors must not grow from stage to stage: {survivors}")
        if survivors[-1] != 1:
            raise ValueError(f"the last stage must keep exactly 1 survivor (the next parent), not {survivors[-1]}")
        return self


class NSGA2Spec(Closed):
    """NSGA-II over every budget up to the space's, for a whole front in one job; one fixed sample set scores all.

    On width spaces every genome must reach the smallest speedup target, and ``objectives: [kl, latency]`` makes the
    estimated time (from the latency table) the second objective instead of the parameter count.
    """

    kind: Literal["nsga2"]
    generations: int = Field(10, ge=1)
    population: int = Field(16, ge=2)
    tokens: int = Field(1024, ge=1)
    objectives: tuple[Literal["kl", "ppl"], Literal["params", "latency"]] = ("kl", "params")


STRATEGIES = {"evopress": EvoPressSpec, "nsga2": NSGA2Spec}


def _strategy_kind(value: Any) -> str | None:
    """The strategy's tag; ``kind`` may be left out for EvoPress, the default."""
    return value.get("kind", "evopress") if isinstance(value, dict) else getattr(value, "kind", None)


StrategySpec = Annotated[
    Annotated[EvoPressSpec, Tag("evopress")] | Annotated[NSGA2Spec, Tag("nsga2")], Discriminator(_strategy_kind)
]


class FrontSpec(Closed):
    """Reference point of the hypervolume recorded per generation: (``reference_kl``, the dense parameter count)."""

    reference_kl: float = Field(5.0, gt=0)


class EvaluationSpec(Closed):
    """How candidates are scored: sample length, pool sizes, and the teacher's top-k for KL."""

    seq_len: int = Field(128, ge=8)
    calibration_samples: int = Field(64, ge=1)
    heldout_samples: int = Field(32, ge=1)
    heldout_fraction: float = Field(0.1, gt=0, lt=1)
    top_k: int = Field(128, ge=1)


class RunSpec(Closed):
    """How the job runs; changing it does not change the study, so it may differ on resume."""

    workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)


class JobSpec(Closed):
    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    data: str | dict[str, Any] = "wiki-sample"
    seed: int = 0
    space: SpaceSpec
    strategy: StrategySpec = Field(default_factory=EvoPressSpec)
    front: FrontSpec = Field(default_factory=FrontSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    run: RunSpec = Field(default_factory=RunSpec)
    baselines: list[BaselineSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _baselines_fit_the_space(self) -> JobSpec:
        methods = [b.method for b in self.baselines]
        for index, method in enumerate(methods):
            if self.space.kind not in BASELINE_SPACES[method]:
                kinds = " and ".join(BASELINE_SPACES[method])
                raise ValueError(f"baselines.{index}.method: {method} applies to {kinds} spaces, not {self.space.kind}")
            if method in methods[:index]:
                raise ValueError(f"baselines.{index}.method: {method} is listed twice")
            if self.baselines[index].samples > self.evaluation.calibration_samples:
                raise ValueError(f"baselines.{index}.samples: {self.baselines[index].samples} is more than "
                                 f"evaluation.calibration_samples ({self.evaluation.calibration_samples})")
        warm = getattr(self.strategy, "warm_start", None)
        if warm is not None and self.space.kind not in BASELINE_SPACES[warm]:
            raise ValueError(f"strategy.warm_start: {warm} applies to {' and '.join(BASELINE_SPACES[warm])} spaces, "
                             f"not {self.space.kind}")
        return self

    @property
    def all_baselines(self) -> list[BaselineSpec]:
        """The listed baselines, plus the warm start's method with default settings when it is not listed."""
        warm = getattr(self.strategy, "warm_start", None)
        listed = {b.method for b in self.baselines}
        return [*self.baselines, *([BaselineSpec(method=warm)] if warm and warm not in listed else [])]

    @model_validator(mode="after")
    def _samples_fit_the_pool(self) -> JobSpec:
        strategy = self.strategy
        tokens = [s.tokens for s in strategy.stages] if isinstance(strategy, EvoPressSpec) else [strategy.tokens]
        pool = self.evaluation.calibration_samples
        for count in tokens:
            needed = math.ceil(count / self.evaluation.seq_len)
            if needed > pool:
                raise ValueError(
                    f"scoring on {count} tokens needs {needed} samples of {self.evaluation.seq_len} tokens, "
                    f"but evaluation.calibration_samples is {pool}"
                )
        return self

    @model_validator(mode="after")
    def _one_budget_for_nsga2(self) -> JobSpec:
        if self.strategy.kind == "nsga2" and self.space.kind not in ("depth", "width"):
            raise ValueError(f"strategy.kind: nsga2 searches depth and width spaces only, not {self.space.kind}; "
                             "use evopress")
        if self.strategy.kind == "nsga2" and self.space.kind == "depth" and isinstance(self.space.drop, list):
            raise ValueError("space.drop: nsga2 explores every budget up to it; give one number, not a list")
        if self.strategy.kind == "nsga2" and "latency" in self.strategy.objectives and self.space.kind != "width":
            raise ValueError("strategy.objectives: latency needs a width space (its latency table)")
        return self

    def study_spec(self) -> dict:
        """What identifies the study: everything but its name, the run settings and the baselines.

        Baselines only add candidates, so a study may gain some later; a warm start changes the search, so the
        settings of the baseline it starts from are part of the study (and an unset warm start leaves no key, as in
        studies stored before warm starts existed).
        """
        spec = self.model_dump(mode="json", exclude={"name", "run", "baselines"})
        warm = spec["strategy"].pop("warm_start", None)
        if warm is not None:
            spec["strategy"]["warm_start"] = next(
                b for b in self.all_baselines if b.method == warm).settings()
        return spec


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    loc = loc[:1] + [part for part in loc[1:] if part not in {*STRATEGIES, *SPACES}]  # pydantic adds the union's tag
    if first["type"] == "union_tag_invalid":
        loc.append("kind")
        kinds = SPACES if loc[0] == "space" else STRATEGIES
        message = f"unknown kind {first['input'].get('kind')!r}; expected one of {', '.join(kinds)}"
    else:
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    message = message.replace("Value error, ", "")
    return f"{'.'.join(loc)}: {message}" if loc else message


def _resolve_data_files(data: Any, base: Path) -> Any:
    """Make relative ``data_files`` in a datasets source relative to the job file, not the working directory."""
    if not isinstance(data, dict) or "data_files" not in data:
        return data
    def resolve(value: Any) -> Any:
        if isinstance(value, str):
            return str((base / value).resolve()) if not Path(value).is_absolute() else value
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return value
    return {**data, "data_files": resolve(data["data_files"])}


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job file; every problem becomes a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"job file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"job file {path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from error
    if not isinstance(raw, dict):
        raise UserError(f"job file {path} must be a mapping of settings, not {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    raw["data"] = _resolve_data_files(raw.get("data", "wiki-sample"), path.parent)
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as error:
        raise UserError(f"job file {path}: {_one_line(error)}") from error
