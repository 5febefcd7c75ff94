"""Level databases: built once per (model, data, calibration, builder, levels), cached on disk, verified by hash.

The application attaches them (``attach_database``) while it builds the space, before any worker starts. The cache
key covers everything the stored levels depend on, so a different model, calibration text or level setting never
reuses a file. A sidecar JSON holds the key and the SHA-256 of the file: a file that is damaged, truncated or
belongs to another key is rebuilt (with a warning), never used. A file lock makes concurrent jobs on one machine
wait for one build instead of racing; workers only ever read (``LevelDatabase`` refuses a file whose key does not
match).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from paretopress.evaluators.calibration import calibration_xtx
from paretopress.inputs.cache import cache_dir
from paretopress.inputs.data import Documents, bos_prefix, pack_samples
from paretopress.inputs.models import load_tokenizer, model_fingerprint
from paretopress.spaces.database import KEY_FIELD, LevelDatabase, LevelSource

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the stored layout changes


def attach_database(space: LevelSource, model: nn.Module, model_spec: str, documents: Documents, samples: int,
                    seq_len: int, batch_size: int) -> LevelDatabase:
    """Open the space's level database from the cache, building it first if it is absent or fails its hash.

    ``samples`` calibration samples of ``seq_len`` tokens feed the builders that need them.
    """
    key = database_key(space, model, model_spec, documents, samples, seq_len)
    path = cache_dir("levels") / f"{key}.safetensors"
    with _locked(path):
        problem = check_database(path, key)
        if problem:
            if path.exists():
                log.warning("level database %s %s; rebuilding it", path.name, problem)
            tokens = None
            if space.needs_calibration:
                tokens = pack_samples(documents.calibration, load_tokenizer(model_spec), seq_len, samples)
            write_database(path, key, build_levels(space, model, tokens, batch_size))
    database = LevelDatabase(path, key)
    space.attach(database)
    return database


def database_key(space: LevelSource, model: nn.Module, model_spec: str, documents: Documents, samples: int,
                 seq_len: int) -> str:
    """The cache key of the space's levels: everything they depend on, the device that builds them included (a GPU's
    arithmetic differs from a CPU's in the last bits, so a study keeps the levels of the device it was built on)."""
    calibration = {"samples": samples, "seq_len": seq_len}
    if space.needs_calibration and bos_prefix(load_tokenizer(model_spec)):
        calibration["bos"] = True  # samples that start with BOS (keys without it stay as they were)
    identity = {"format": FORMAT, "model": model_fingerprint(model_spec), "data": documents.fingerprint,
                "calibration": calibration if space.needs_calibration else None, "units": space.units,
                **space.identity()}
    device = next(model.parameters()).device.type
    if device != "cpu":
        identity["device"] = device  # CPU keys stay as they were
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


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
    """Every unit's stored tensors, computed layer by layer with a progress bar on stderr.

    The calibration statistics come from forward passes where the model is (a GPU, when the job's workers have one),
    and the builders work unit by unit there too; what they store comes back to the CPU for the file.
    """
    inputs = space.calibration_inputs()
    statistics = calibration_xtx(model, inputs, tokens, batch_size) if tokens is not None else {}
    tensors: dict[str, torch.Tensor] = {}
    for index, name in enumerate(tqdm(inputs, desc=f"{space.builder} levels", unit="unit")):
        stored = space.unit_levels(model, index, statistics.pop(name, None))
        tensors.update({key: tensor.cpu() for key, tensor in stored.items()})
    return tensors


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
