"""The job file: a validated, closed schema (unknown keys are errors), loaded from YAML as plain data."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from paretopress.errors import UserError


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DepthSpaceSpec(Closed):
    """Drop ``drop`` whole blocks, or ``drop`` attention/MLP sub-layers with ``granularity: sublayer``."""

    kind: Literal["depth"] = "depth"
    granularity: Literal["block", "sublayer"] = "block"
    drop: int = Field(ge=1)


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
    space: DepthSpaceSpec
    strategy: EvoPressSpec = Field(default_factory=EvoPressSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    run: RunSpec = Field(default_factory=RunSpec)

    @model_validator(mode="after")
    def _stages_fit_the_pool(self) -> JobSpec:
        pool = self.evaluation.calibration_samples
        for stage in self.strategy.stages:
            needed = math.ceil(stage.tokens / self.evaluation.seq_len)
            if needed > pool:
                raise ValueError(
                    f"a stage of {stage.tokens} tokens needs {needed} samples of {self.evaluation.seq_len} tokens, "
                    f"but evaluation.calibration_samples is {pool}"
                )
        return self

    def study_spec(self) -> dict:
        """What identifies the study: everything but its name and the run settings."""
        return self.model_dump(mode="json", exclude={"name", "run"})


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "job"
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    return f"{where}: {message}".replace("Value error, ", "")


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
