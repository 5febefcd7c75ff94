"""Level databases: built once per (model, data, calibration, builder, levels), cached on disk, verified by hash.

The controller calls ``attach_database`` before any worker starts. The cache key covers everything the stored levels
depend on, so a different model, calibration text or level setting never reuses a file. A sidecar JSON holds the
key and the SHA-256 of the file: a file that is damaged, truncated or belongs to another key is rebuilt (with a
warning), never used. A file lock makes concurrent jobs on one machine wait for one build instead of racing; workers
only ever read (``LevelDatabase`` refuses a file whose key does not match).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from paretopress.job import JobSpec
from paretopress.search.cache import cache_dir
from paretopress.search.data import load_documents, pack_samples
from paretopress.search.models import load_tokenizer, model_fingerprint
from paretopress.spaces.database import KEY_FIELD, LevelDatabase, LevelSource

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the stored layout changes


def attach_database(space: LevelSource, job: JobSpec, model: nn.Module, samples: int) -> LevelDatabase:
    """Open the space's level database from the cache, building it first if it is absent or fails its hash.

    ``samples`` calibration samples of ``job.evaluation.seq_len`` tokens feed the builders that need them.
    """
    documents = load_documents(job.data, heldout_fraction=job.evaluation.heldout_fraction)
    calibration = {"samples": samples, "seq_len": job.evaluation.seq_len}
    identity = {"format": FORMAT, "model": model_fingerprint(job.model), "data": documents.fingerprint,
                "calibration": calibration if space.needs_calibration else None, "units": space.units,
                **space.identity()}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir("levels") / f"{key}.safetensors"
    with _locked(path):
        problem = check_database(path, key)
        if problem:
            if path.exists():
                log.warning("level database %s %s; rebuilding it", path.name, problem)
            tokens = None
            if space.needs_calibration:
                tokens = pack_samples(documents.calibration, load_tokenizer(job.model), calibration["seq_len"],
                                      calibration["samples"])
            write_database(path, key, build_levels(space, model, tokens, job.run.batch_size))
    database = LevelDatabase(path, key)
    space.attach(database)
    return database


def check_database(path: Path, key: str) -> str | None:
    """Why the file at ``path`` cannot be used for ``key``, or None if its content hash and key match."""
    sidecar = path.with_suffix(".json")
    if not path.exists() or not sidecar.exists():
        return "is missing"
    try:
        recorded = json.loads(sidecar.read_text())
    except json.JSONDecodeError:
        return "has an unreadable hash record"
    if recorded.get(KEY_FIELD) != key:
        return f"belongs to key {recorded.get(KEY_FIELD)!r}, not {key!r}"
    if recorded.get("sha256") != _file_hash(path):
        return "is damaged (content hash mismatch)"
    return None


def build_levels(space: LevelSource, model: nn.Module, tokens: torch.Tensor | None,
                 batch_size: int) -> dict[str, torch.Tensor]:
    """Every unit's stored tensors, computed layer by layer with a progress bar on stderr."""
    inputs = space.calibration_inputs()
    statistics = calibration_xtx(model, inputs, tokens, batch_size) if tokens is not None else {}
    tensors: dict[str, torch.Tensor] = {}
    for index, name in enumerate(tqdm(inputs, desc=f"{space.builder} levels", unit="unit")):
        tensors.update(space.unit_levels(model, index, statistics.pop(name, None)))
    return tensors


def xtx(flat: torch.Tensor) -> torch.Tensor:
    """X^T X of inputs [tokens, features]: the Hessian of a linear layer's squared reconstruction error."""
    return flat.T @ flat


def calibration_xtx(model: nn.Module, units: tuple[str, ...], tokens: torch.Tensor, batch_size: int,
                    statistic: Callable[[torch.Tensor], torch.Tensor] = xtx) -> dict[str, torch.Tensor]:
    """A sum over the calibration tokens of ``statistic`` (X^T X by default) of every unit's input, in one pass.

    Linears that read the same tensor one after the other (q/k/v, gate/up) share one product instead of computing
    it again; the last input is held by reference, so its identity cannot be taken over by a new tensor.
    """
    sums: dict[str, torch.Tensor] = {}
    last: list = [None, None]  # the last input seen and its product

    def hook(unit: str):
        def accumulate(_module, inputs):
            x = inputs[0]
            if last[0] is not x:
                flat = x.reshape(-1, x.shape[-1]).float()
                last[:] = [x, statistic(flat)]
            if unit in sums:
                sums[unit] += last[1]
            else:
                sums[unit] = last[1].clone()
        return accumulate

    handles = [model.get_submodule(unit).register_forward_pre_hook(hook(unit)) for unit in units]
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, tokens.shape[0], batch_size), desc="calibration statistics", unit="batch"):
                model(input_ids=tokens[start : start + batch_size], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        last[:] = [None, None]
    return sums


def write_database(path: Path, key: str, tensors: dict[str, torch.Tensor]) -> None:
    """Write the file and its hash record atomically: readers see the old state or the complete new one."""
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        save_file(tensors, tmp.name, metadata={KEY_FIELD: key})
    digest = _file_hash(Path(tmp.name))
    os.replace(tmp.name, path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump({KEY_FIELD: key, "sha256": digest}, tmp)
    os.replace(tmp.name, path.with_suffix(".json"))


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
