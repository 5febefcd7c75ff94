"""The few calls the search makes on the store, as a protocol: ``search/`` never imports the store itself.

``paretopress.store.Store`` implements them. Only the controller (and the baselines it runs) calls them, in the one
process that writes the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from paretopress.spaces.genome import Genome


class Ledger(Protocol):
    def lookup(self, study_id: int, genome: Genome, evaluators: Iterable[str], pool: str,
               samples: Iterable[int]) -> dict[str, float] | None:
        """The stored values of every evaluator for this genome on exactly these samples, or None if one is missing."""

    def record(self, study_id: int, genome: Genome, origin: str, parent: Genome | None, generation: int | None,
               pool: str, samples: tuple[int, ...], tokens: int, values: dict[str, float], seconds: float,
               worker: str) -> int:
        """Store one evaluation (and its candidate if new); returns the candidate's id."""

    def candidate_id(self, study_id: int, genome: Genome) -> int | None:
        """The id of the study's candidate with this genome, if stored."""

    def record_hypervolume(self, study_id: int, generation: int, value: float, objectives: list[str],
                           reference: list[float]) -> None:
        """The hypervolume of a generation's front (idempotent)."""

    def baseline_genomes(self, study_id: int, settings: dict) -> dict[str, Genome]:
        """label -> genome of the baseline run with these settings, if stored."""

    def record_baseline(self, study_id: int, method: str, settings: dict, genomes: dict[str, Genome],
                        seconds: float, passes: int) -> None:
        """The genomes of one baseline run, with what computing them cost."""
