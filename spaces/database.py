"""A level database on disk, opened lazily and memory-mapped in the process that applies genomes.

Spaces are pickled to every Ray worker, so they carry a ``LevelDatabase`` (path and key, a few bytes) and each
process maps the file on first use. Tensors are views of the mapping: reading a level touches only its pages, and
pages are shared between processes by the OS page cache. The file is the safetensors format (8-byte header length,
JSON header, raw data), parsed here so tensors can be zero-copy views rather than copies.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "U8": torch.uint8, "I64": torch.int64,
          "I32": torch.int32}
KEY_FIELD = "key"


class LevelDatabase:
    """Read side of one database file, identified by ``key`` (which the file's metadata must repeat)."""

    def __init__(self, path: str | Path, key: str) -> None:
        self.path = Path(path)
        self.key = key
        self._map: mmap.mmap | None = None
        self._header: dict = {}
        self._offset = 0

    def __getstate__(self) -> dict:
        return {"path": self.path, "key": self.key}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["key"])

    def _open(self) -> None:
        if not self.path.is_file():
            raise RuntimeError(f"level database {self.path} is missing; the controller builds it before workers start")
        with self.path.open("rb") as file:
            length = struct.unpack("<Q", file.read(8))[0]
            header = json.loads(file.read(length))
            # copy-on-write: torch wants a writable buffer; pages stay shared until written, which nothing does
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
        found = header.get("__metadata__", {}).get(KEY_FIELD)
        if found != self.key:
            raise RuntimeError(f"level database {self.path} has key {found!r}, expected {self.key!r}; rebuild it")
        self._header, self._offset = header, 8 + length

    def tensor(self, name: str) -> torch.Tensor:
        """A view of one stored tensor; no copy."""
        if self._map is None:
            self._open()
        entry = self._header[name]
        start, end = entry["data_offsets"]
        dtype = DTYPES[entry["dtype"]]
        if end == start:
            return torch.empty(entry["shape"], dtype=dtype)
        flat = torch.frombuffer(self._map, dtype=dtype, count=(end - start) // dtype.itemsize,
                                offset=self._offset + start)
        return flat.view(entry["shape"])


class LevelSource(Protocol):
    """What the level-database cache needs of a space: its identity, and how to build one unit's stored tensors."""

    builder: str
    needs_calibration: bool  # whether ``unit_levels`` uses the calibration statistic X^T X
    units: tuple[str, ...]

    def identity(self) -> dict:
        """Everything besides model, data and calibration that determines the stored levels (for the cache key)."""

    def calibration_inputs(self) -> tuple[str, ...]:
        """One module name per unit: the X^T X of that module's input is what ``unit_levels`` gets."""

    def unit_levels(self, model: nn.Module, index: int, xtx: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Every stored tensor of unit ``index``, named ``{unit}.*``, from the dense ``model``."""

    def attach(self, database: LevelDatabase) -> None:
        """Read levels from ``database`` from now on (also in the processes the space is pickled to)."""
