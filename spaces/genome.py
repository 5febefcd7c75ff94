"""Genomes: one level per unit of a space, canonical and hashable."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Genome:
    """The level of every unit of a space, in the space's unit order (0 = least compressed)."""

    levels: tuple[int, ...]

    def to_json(self) -> str:
        """Compact canonical JSON; the space's unit names are stored once with the study, not per genome."""
        return json.dumps(list(self.levels), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Genome:
        return cls(tuple(int(level) for level in json.loads(text)))

    @property
    def key(self) -> str:
        """Stable hash of the canonical JSON: the identity of a genome in the store."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:20]

    def with_levels(self, changes: dict[int, int]) -> Genome:
        levels = list(self.levels)
        for index, level in changes.items():
            levels[index] = level
        return Genome(tuple(levels))
