"""Latency tables: measured times of every sub-layer width on one device, kept in the store, turned into time budgets.

A row is (device, dtype, batch, seq, module, level) -> seconds, where ``module`` is a sub-layer type (its signature:
class, hidden size, head size, ...) or a whole model, and ``level`` the structures it keeps (0: dropped).

Sub-layers are timed in place, not alone: for each width the whole model runs with that sub-layer at that width in
every layer (each layer its own weights), and the sub-layer's time is the model's time over the time with that
sub-layer dropped everywhere, per layer. Timed alone, a sub-layer's weights stay in the CPU caches between calls and
it measures faster than inside a model, where every layer's weights stream through them (on SmolLM2 the stand-alone
table predicted 2.08x for a model that ran 2.93x faster). The dropped sub-layer therefore costs 0 by definition: its
stand-in, like the embeddings and the LM head, belongs to the rest of the model.

Every variant runs once per round, in a freshly shuffled order, the rounds repeated after warm-up. A sub-layer's time
is the median over rounds of its variant's time minus the dropped reference's time *in the same round*, seconds
apart, so that the load of a shared machine, which drifts over minutes by more than a narrow sub-layer's whole time,
cancels out of each difference. The widths a space needs are measured together in one run (they share its dense and
dropped references); a later job on the same device, dtype and shape that finds all of them in the store measures
nothing, so `paretopress profile` is an optional head start.
"""

from __future__ import annotations

import copy
import logging
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from paretopress.evaluators.forward import model_device
from paretopress.inputs.models import load_model, model_fingerprint
from paretopress.kernel.errors import UserError
from paretopress.spaces.budget import TimeTable
from paretopress.spaces.specs.width import DEFAULT_CHANNELS, DEFAULT_MULTIPLE, LatencySpec
from paretopress.spaces.width import WidthSpace
from paretopress.store.store import Store

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WARMUP_ROUNDS = 3

Key = tuple[str, int]  # (module, level)


@dataclass(frozen=True)
class Setting:
    """Where and on what input times are measured: the device (named so that tables of two machines never mix),
    dtype, and batch x sequence length of a prefill forward pass."""

    device: str
    dtype: str
    batch: int
    seq: int
    threads: int

    @classmethod
    def from_spec(cls, spec: LatencySpec) -> Setting:
        if spec.device == "cuda" and not torch.cuda.is_available():
            raise UserError("latency device cuda is not available on this machine; use device: cpu")
        return cls(spec.device, spec.dtype, spec.batch, spec.seq, spec.threads or torch.get_num_threads())

    @property
    def name(self) -> str:
        """The device as the table knows it: CPU model and thread count, or the GPU's name."""
        if self.device == "cuda":
            return f"cuda: {torch.cuda.get_device_name()}"
        return f"cpu: {_cpu_model()} x {self.threads} threads"

    def key(self) -> tuple[str, str, int, int]:
        return self.name, self.dtype, self.batch, self.seq


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def model_key(model: nn.Module, spec: str) -> Key:
    """The table key of a whole model's forward pass: its class and the identity of its weights and config."""
    return f"{type(model).__name__}[{model_fingerprint(spec)}]", 0


def space_times(store: Store, model: nn.Module, spec: str, space: WidthSpace, latency: LatencySpec) -> TimeTable:
    """The width space's unit times on ``latency``'s setting, from the store's table (measuring what it lacks)."""
    setting = Setting.from_spec(latency)
    table = latency_table(store, model, spec, space, setting, latency.repeats)
    times = time_table(space, table, model_key(model, spec), setting.name)
    if not times.consistent:
        raise UserError(f"the latency table on {setting.name} is inconsistent: the sub-layers take "
                        f"{1e3 * times.prunable:.3f} ms, the whole model {1e3 * times.dense:.3f} ms; measure again "
                        "when the machine is quiet (paretopress profile --force) or with more repeats")
    return times


@dataclass(frozen=True)
class Profile:
    """A model's latency table on one setting, as `paretopress profile` shows it."""

    device: str
    modules: dict[Key, float]  # (module signature, structures kept) -> seconds, widest first
    full: dict[str, float]  # module signature -> seconds at full width
    model: float  # the whole dense model
    prunable: float  # every layer's sub-layers at full width
    consistent: bool  # whether a search can use it (``TimeTable.consistent``)


def profile_model(spec: str, db_path: str | Path, *, device: str, batch: int, seq: int, dtype: str,
                  threads: int | None, repeats: int, channels: list[float] | None, force: bool) -> Profile:
    """Measure (or read) the times of every attention and MLP width of the model, on the default width grid or the
    given FFN fractions, and of the whole model; record them in the store at ``db_path``."""
    try:
        latency = LatencySpec(device=device, batch=batch, seq=seq, dtype=dtype, threads=threads, repeats=repeats)
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"--{first['loc'][0]}: {first['msg']}") from error
    setting = Setting.from_spec(latency)
    model = load_model(spec)
    space = WidthSpace(model, None, channels or list(DEFAULT_CHANNELS), "magnitude", DEFAULT_MULTIPLE)
    with Store(db_path) as store:
        table = latency_table(store, model, spec, space, setting, repeats, force)
    times = time_table(space, table, model_key(model, spec), setting.name)
    parts = space.latency_keys()[:2]  # layer 0's attention and MLP: every layer has the same ones
    return Profile(setting.name, {key: table[key] for keys in parts for key in keys},
                   {keys[0][0]: table[keys[0]] for keys in parts}, times.dense, times.prunable, times.consistent)


def latency_table(store: Store, model: nn.Module, spec: str, space: WidthSpace, setting: Setting,
                  repeats: int, force: bool = False) -> dict[Key, float]:
    """Every time the space needs on this setting: from the store, or (if any is missing, or ``force``) all of them
    measured in one run and recorded first."""
    known = store.latencies(*setting.key())
    whole = model_key(model, spec)
    wanted = {key for keys in space.latency_keys() for key in keys} | {whole}
    if force or not wanted <= set(known):
        log.info("measuring %d latencies on %s (%d rounds of whole-model passes)", len(wanted), setting.name, repeats)
        measured = measure(model, space, whole, setting, repeats)
        store.record_latencies(*setting.key(), measured, repeats)
        known = {**known, **measured}
    return known


def time_table(space: WidthSpace, table: dict[Key, float], whole: Key, device: str) -> TimeTable:
    """The space's unit times per level, made non-increasing along the levels: a narrower sub-layer is never
    slower, and where noise measured it so, the wider one's time stands."""
    seconds = tuple(tuple(np.minimum.accumulate([table[key] for key in unit]).tolist())
                    for unit in space.latency_keys())
    return TimeTable(seconds, table[whole], device)


def measure(model: nn.Module, space: WidthSpace, whole: Key, setting: Setting, repeats: int) -> dict[Key, float]:
    """Seconds of the dense model (under ``whole``) and of every sub-layer width of the space, timed in place."""
    with _threads(setting.threads), torch.inference_mode():
        dtype = DTYPES[setting.dtype]
        same = (setting.device, dtype) == (model_device(model).type, model.dtype)
        target = model if same else copy.deepcopy(model).to(setting.device, dtype)
        tokens = torch.randint(0, model.config.vocab_size, (setting.batch, setting.seq),
                               generator=torch.Generator().manual_seed(0)).to(setting.device)

        def forward() -> object:
            return target(input_ids=tokens, use_cache=False)

        variants = {key: [(parent, name, module.to(setting.device, dtype)) for parent, name, module in replacements]
                    for key, replacements in space.timing_variants(target).items()}
        calls = {key: (lambda r=replacements: _with(r, forward)) for key, replacements in variants.items()
                 if replacements}  # the full width is the dense model itself
        rounds = timed_rounds({whole: forward, **calls}, repeats, _synchronizer(setting.device))
        rounds.update({key: rounds[whole] for key, replacements in variants.items() if not replacements})
    layers = space.anatomy.num_layers

    def per_layer(module: str, kept: int) -> float:
        differences = np.subtract(rounds[(module, kept)], rounds[(module, 0)])
        return max(0.0, float(np.median(differences))) / layers

    return {whole: statistics.median(rounds[whole]), **{(module, kept): per_layer(module, kept)
                                                         for module, kept in variants}}


def _with(replacements: list[tuple[nn.Module, str, nn.Module]], run: Callable[[], object]) -> object:
    """``run()`` with the modules replaced, put back afterwards."""
    originals = [(parent, name, getattr(parent, name)) for parent, name, _ in replacements]
    for parent, name, module in replacements:
        setattr(parent, name, module)
    try:
        return run()
    finally:
        for parent, name, module in reversed(originals):
            setattr(parent, name, module)


def median_times(calls: dict[Key, Callable[[], object]], repeats: int,
                 synchronize: Callable[[], None] = lambda: None) -> dict[Key, float]:
    """Median seconds of each call over ``repeats`` rounds after warm-up (``timed_rounds``)."""
    return {key: statistics.median(times) for key, times in timed_rounds(calls, repeats, synchronize).items()}


def timed_rounds(calls: dict[Key, Callable[[], object]], repeats: int,
                 synchronize: Callable[[], None] = lambda: None) -> dict[Key, list[float]]:
    """Seconds of each call in each of ``repeats`` rounds after warm-up, in round order; every round runs every call
    once, in a freshly shuffled order, so slow phases of a shared machine spread over all calls instead of a few."""
    keys = list(calls)
    rng = np.random.default_rng(0)
    samples: dict[Key, list[float]] = {key: [] for key in keys}
    for round_index in range(WARMUP_ROUNDS + repeats):
        for i in rng.permutation(len(keys)):
            synchronize()
            start = time.perf_counter()
            calls[keys[i]]()
            synchronize()
            if round_index >= WARMUP_ROUNDS:
                samples[keys[i]].append(time.perf_counter() - start)
    return samples


def _synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


@contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
