"""The job file: a validated, closed schema (unknown keys are errors), loaded from YAML as plain data.

Its space, strategy and baseline sections are the tagged unions of the kinds their registries hold: each kind's spec
lives with the kind (``spaces/specs``, ``search/strategies``, ``search/baselines/specs``) and validates itself.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from paretopress.kernel.errors import UserError
from paretopress.kernel.registry import Registry
from paretopress.kernel.spec import Closed
from paretopress.search.baselines.specs import BASELINES, BaselineSpec
from paretopress.search.strategies import STRATEGIES
from paretopress.search.strategies.evopress import EvoPressSpec
from paretopress.spaces.specs import SPACES

SpaceChoice = SPACES.union()
StrategyChoice = STRATEGIES.union()
BaselineChoice = BASELINES.union()
#: The job-file fields whose value is a union of registered kinds (pydantic names the member in error locations).
UNION_FIELDS: dict[str, Registry] = {"space": SPACES, "strategy": STRATEGIES, "baselines": BASELINES,
                                     "warm_start": BASELINES}


class FrontSpec(Closed):
    """The front's cost axis and the reference point of the hypervolume recorded per generation.

    ``cost: params`` (the default) ranks candidates by parameter count, ``cost: bytes`` by the bytes their searched
    tensors store (quant and gguf spaces: bits change no parameter count, so a params front of such a study is flat
    and its hypervolume 0). The hypervolume's reference is (``reference_kl``, the dense genome's cost).
    """

    reference_kl: float = Field(5.0, gt=0)
    cost: Literal["params", "bytes"] = "params"


class EvaluationSpec(Closed):
    """How candidates are scored: sample length, pool sizes, and the teacher's top-k for KL.

    ``tail_samples`` makes the search's fitness cheaper on large vocabularies: its KL and perplexity evaluate the
    output head only at the teacher's top-k ids and the next tokens, and estimate the rest of the softmax normaliser
    from that many sampled vocabulary entries (held-out reports stay exact; ``benchmarks/RESULTS.md`` has the error).
    ``dtype`` is the candidates' arithmetic on the workers: ``auto`` is bfloat16 where they run on a GPU and float32
    on a CPU, where bfloat16 (3.3x a float32 forward with AVX-512 BF16) changes which close offspring survive; float16
    only on a GPU. The teacher stays the float32 dense model, so a study's values include half precision's own small
    divergence. Both change the values a study stores, so both are part of its identity (unlike the run settings),
    which records the dtype ``auto`` resolved to.
    """

    # 256-token samples, a pool of 96 (24k tokens): at EvoPress' default last stage (8k tokens) the demo's fitness
    # moved by 1.3% (sd) from minibatch to minibatch, against the 1-2% differences selection must resolve
    seq_len: int = Field(256, ge=8)
    calibration_samples: int = Field(96, ge=1)
    heldout_samples: int = Field(32, ge=1)
    heldout_fraction: float = Field(0.1, gt=0, lt=1)
    top_k: int = Field(128, ge=1)
    tail_samples: int | None = Field(None, ge=1)  # estimate the search's KL from this many vocabulary entries
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # the candidates' arithmetic on the workers
    # Text of another domain (any data source `data` accepts) that confirms the final genomes, at its own length
    heldout_data: str | dict[str, Any] | None = None
    heldout_seq_len: int | None = Field(None, ge=8)  # default: seq_len

    @property
    def confirmation_seq_len(self) -> int:
        return self.heldout_seq_len or self.seq_len

    def arithmetic(self, device: str) -> str:
        """The concrete dtype of the candidates on ``device`` (``cpu`` or ``cuda``)."""
        if self.dtype == "auto":
            return "bfloat16" if device == "cuda" else "float32"
        if self.dtype == "float16" and device != "cuda":
            raise UserError("evaluation.dtype: float16 needs the workers on a GPU (run.device: cuda); on a CPU use "
                            "float32 or bfloat16")
        return self.dtype


class RunSpec(Closed):
    """How the job runs; changing it does not change the study, so it may differ on resume."""

    workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda where the workers can have a GPU, else cpu
    gpus_per_worker: float = Field(1.0, gt=0)  # what each Ray actor asks for on cuda; fractions share a GPU


class JobSpec(Closed):
    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    data: str | dict[str, Any] = "wiki-sample"
    seed: int = Field(0, ge=0, lt=2**63)  # what the store's integer column holds
    space: SpaceChoice
    strategy: StrategyChoice = Field(default_factory=EvoPressSpec)
    front: FrontSpec = Field(default_factory=FrontSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    run: RunSpec = Field(default_factory=RunSpec)
    baselines: list[BaselineChoice] = Field(default_factory=list)

    @model_validator(mode="after")
    def _baselines_fit_the_space(self) -> JobSpec:
        methods = [b.method for b in self.baselines]
        for index, baseline in enumerate(self.baselines):
            if problem := baseline.problem_with(self.space):
                raise ValueError(f"baselines.{index}.method: {problem}")
            if baseline.method in methods[:index]:
                raise ValueError(f"baselines.{index}.method: {baseline.method} is listed twice")
            if baseline.samples > self.evaluation.calibration_samples:
                raise ValueError(f"baselines.{index}.samples: {baseline.samples} is more than "
                                 f"evaluation.calibration_samples ({self.evaluation.calibration_samples})")
        return self

    @property
    def start_baselines(self) -> list[BaselineSpec]:
        """The baselines the search starts from (a warm start, or the seeds it screens): each named by method (its
        listed settings, else its defaults), or given with its settings (as a stored study records them)."""
        listed = {b.method: b for b in self.baselines}
        return [listed.get(start) or BASELINES[start]() if isinstance(start, str) else start
                for start in self.strategy.start_baselines(self.space)]

    @property
    def all_baselines(self) -> list[BaselineSpec]:
        """The listed baselines, plus the start baselines whose methods are not listed."""
        listed = {b.method for b in self.baselines}
        return [*self.baselines, *(b for b in self.start_baselines if b.method not in listed)]

    @field_validator("name")
    @classmethod
    def _name_is_no_id(cls, name: str) -> str:
        """Commands take a study's name or its id: a name of digits alone would hide the study with that id."""
        if name.isascii() and name.isdigit():
            raise ValueError(f"{name!r} reads as a study id; give the study a name that is not only digits")
        return name

    @model_validator(mode="after")
    def _samples_fit_the_pool(self) -> JobSpec:
        pool = self.evaluation.calibration_samples
        for count in self.strategy.scoring_tokens():
            needed = math.ceil(count / self.evaluation.seq_len)
            if needed > pool:
                raise ValueError(
                    f"scoring on {count} tokens needs {needed} samples of {self.evaluation.seq_len} tokens, "
                    f"but evaluation.calibration_samples is {pool}"
                )
        return self

    @model_validator(mode="after")
    def _strategy_fits_the_space(self) -> JobSpec:
        if problem := self.strategy.problem_with(self.space):
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _front_cost_fits_the_space(self) -> JobSpec:
        if not self.space.has_cost(self.front.cost):
            kinds = ", ".join(name for name, spec in SPACES.items() if self.front.cost in spec.costs)
            raise ValueError(f"front.cost: a {self.space.kind} space has no {self.front.cost} cost; {kinds} spaces do "
                             f"(or joint ones with one of them)")
        return self

    def on_device(self, device: str) -> JobSpec:
        """The job with its candidates' dtype resolved for workers on ``device``: what its study records."""
        evaluation = self.evaluation.model_copy(update={"dtype": self.evaluation.arithmetic(device)})
        return self.model_copy(update={"evaluation": evaluation})

    def study_spec(self) -> dict:
        """What identifies the study: everything but its name, the run settings and the baselines; the job's
        device must be resolved (``on_device``), since ``dtype: auto`` means different arithmetic on each.

        Baselines only add candidates, so a study may gain some later; the baselines a search starts from change
        the search, so the strategy records their settings (``StrategySpec.identity``).
        """
        if self.evaluation.dtype == "auto":
            raise ValueError("the job's dtype is unresolved; call on_device first")
        spec = self.model_dump(mode="json", exclude={"name", "run", "baselines"})
        legacy = (("tail_samples", None), ("dtype", "float32"), ("heldout_data", None), ("heldout_seq_len", None))
        for key, default in legacy:  # as in studies stored before they existed
            if spec["evaluation"][key] == default:
                del spec["evaluation"][key]
        if spec["front"]["cost"] == "params":
            del spec["front"]["cost"]
        spec["strategy"] = self.strategy.identity(self.start_baselines)
        return spec

    @classmethod
    def from_stored(cls, name: str, spec: dict) -> JobSpec:
        """The job of a stored study (its spec as ``study_spec`` wrote it), with default run settings."""
        evaluation = {"dtype": "float32", **spec["evaluation"]}  # stored without it: float32, the old default
        return cls.model_validate({**spec, "evaluation": evaluation, "name": name})


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    loc, registry, field = [], None, None
    for part in (str(p) for p in first["loc"] if not str(p).startswith("tagged-union[")):
        if registry is not None and part in registry:  # the union member's tag pydantic puts after the field
            registry = None
            continue
        loc.append(part)
        if part in UNION_FIELDS:
            registry = field = UNION_FIELDS[part]
        elif not part.isdigit():  # a list index keeps the field's union open
            registry = None
    if first["type"] in ("union_tag_invalid", "union_tag_not_found") and field is not None:
        loc.append(field.tag)
        given = first["input"].get(field.tag) if isinstance(first["input"], dict) else None
        problem = f"unknown {field.what} {given!r}" if given is not None else f"no {field.tag} given"
        message = f"{problem}; expected one of {', '.join(field.names)}"
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


class StrictLoader(yaml.SafeLoader):
    """YAML for job files: no aliases (a few lines of them can expand into gigabytes) and no key given twice (the
    last one would silently win)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"aliases (*{event.anchor}) are not allowed in job files",
                                              event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job file; every problem becomes a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"job file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"job file {path} is not UTF-8 text (byte {error.start} cannot be decoded)") from error
    except OSError as error:
        raise UserError(f"cannot read job file {path}: {error.strerror}") from error
    try:
        raw = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"job file {path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from error
    if not isinstance(raw, dict):
        raise UserError(f"job file {path} must be a mapping of settings, not {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    raw["data"] = _resolve_data_files(raw.get("data", "wiki-sample"), path.parent)
    if isinstance(evaluation := raw.get("evaluation"), dict) and "heldout_data" in evaluation:
        raw["evaluation"] = {**evaluation, "heldout_data": _resolve_data_files(evaluation["heldout_data"], path.parent)}
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as error:
        raise UserError(f"job file {path}: {_one_line(error)}") from error
