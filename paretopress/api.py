"""A store seen from Python: studies, candidates, fronts and hypervolumes as pandas DataFrames.

Everything reads through a read-only Store, and every call reads afresh, so a notebook can follow a job that is
writing the same file (SQLite WAL: readers never block the writer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from sqlalchemy import inspect

from paretopress.evaluators.samples import CALIBRATION, CONFIRMATION, HELDOUT
from paretopress.kernel.errors import UserError
from paretopress.report.front import front_cost, model_front, study_front
from paretopress.report.plots import plot_front, plot_genome, plot_hypervolume
from paretopress.report.tokens import study_tokens
from paretopress.spaces.genome import Genome
from paretopress.spaces.specs import budget_text
from paretopress.store.store import Store

__all__ = ["StoreView", "open_store", "plot_front", "plot_genome", "plot_hypervolume"]

STUDY_COLUMNS = ["id", "name", "status", "model", "space", "granularity", "budget", "strategy", "candidates",
                 "tokens", "created", "updated"]
CANDIDATE_COLUMNS = ["candidate", "origin", "generation", "parent", "genome", "compressed"]
HYPERVOLUME_COLUMNS = ["study", "generation", "hypervolume", "objectives", "reference"]
BASELINE_COLUMNS = ["method", "label", "candidate", "seconds", "passes", "settings"]


def open_store(path: str | Path) -> StoreView:
    """Open a store for reading; a missing or foreign file is a UserError."""
    return StoreView(path)


class StoreView:
    """Read-only DataFrame views of one store. A study is named by its name or its numeric id."""

    def __init__(self, path: str | Path) -> None:
        self.store = Store(path, readonly=True)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> StoreView:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StoreView({str(self.store.path)!r})"

    def studies(self) -> pd.DataFrame:
        """One row per study: what it searches, how far it got."""
        rows = [
            [s.id, s.name, s.status, s.spec["model"], s.spec["space"]["kind"], s.spec["space"].get("granularity"),
             budget_text(s.spec["space"]), s.spec["strategy"].get("kind"), len(self.store.candidates(s.id)),
             study_tokens(self.store, s).total, s.created_at, s.updated_at]
            for s in self.store.studies()
        ]
        return pd.DataFrame(rows, columns=STUDY_COLUMNS)

    def tokens(self, study: str | int) -> dict[str, int]:
        """Tokens the study forwarded: by candidates (``search``: those on calibration samples), by baselines, by the
        teacher, and in total."""
        tokens = study_tokens(self.store, self.store.study(study))
        return {**asdict(tokens), "total": tokens.total}

    def candidates(self, study: str | int) -> pd.DataFrame:
        """One row per candidate: its genome, its held-out values (``kl``, ``ppl``, ``params``, ...), those on
        ``evaluation.heldout_data``'s text where the job has one (``confirmation_kl``, ...) and its calibration values
        at the highest fidelity it reached (``calib_kl``, ``calib_tokens``).

        Where one fidelity was measured on several sample sets (a fresh minibatch per selection step), the latest
        counts; values a candidate lacks are NaN.
        """
        study_id = self.store.study(study).id
        heldout: dict[int, dict[str, float]] = {}
        calibration: dict[int, tuple[int, dict[str, float]]] = {}
        for e in self.store.evaluations(study_id):
            if e.pool == HELDOUT:
                heldout.setdefault(e.candidate_id, {})[e.evaluator] = e.value
            elif e.pool == CONFIRMATION:
                heldout.setdefault(e.candidate_id, {})[f"{CONFIRMATION}_{e.evaluator}"] = e.value
            elif e.pool == CALIBRATION:
                tokens, values = calibration.get(e.candidate_id, (-1, {}))
                if e.tokens > tokens:
                    tokens, values = e.tokens, {}
                    calibration[e.candidate_id] = (tokens, values)
                if e.tokens == tokens:
                    values[f"calib_{e.evaluator}"] = e.value
        rows = []
        for c in self.store.candidates(study_id):
            levels = list(Genome.from_json(c.genome).levels)
            tokens, values = calibration.get(c.id, (None, {}))
            rows.append({"candidate": c.id, "origin": c.origin, "generation": c.generation, "parent": c.parent_id,
                         "genome": levels, "compressed": sum(1 for level in levels if level),
                         **heldout.get(c.id, {}), **values, "calib_tokens": tokens})
        evaluators = sorted({k for values in heldout.values() for k in values})
        calibrated = sorted({k for _, values in calibration.values() for k in values})
        columns = [*CANDIDATE_COLUMNS, *evaluators, *calibrated, "calib_tokens"]
        frame = pd.DataFrame(rows, columns=columns)
        return frame.astype({"generation": "Int64", "parent": "Int64", "calib_tokens": "Int64"})

    def front(self, study: str | int, objectives: Sequence[str] | None = None) -> pd.DataFrame:
        """The study's non-dominated candidates over held-out ``objectives`` (all minimised; default: KL and the
        study's ``front.cost``), cheapest first."""
        row = self.store.study(study)
        objectives = tuple(objectives or ("kl", front_cost(row.spec)))
        return _frame(study_front(self.store, row.id, objectives), ["candidate", "origin", "generation", *objectives])

    def front_across(self, model: str | None = None, objectives: Sequence[str] = ("kl", "params")) -> pd.DataFrame:
        """Non-dominated candidates over every study of one model; ``model`` may be left out if the store has one."""
        models = sorted({s.spec["model"] for s in self.store.studies()})
        if model is None:
            if len(models) != 1:
                raise UserError(f"name a model: the store holds studies of {', '.join(models) or 'no model'}")
            model = models[0]
        rows = model_front(self.store, model, tuple(objectives))
        return _frame(rows, ["study", "candidate", "origin", "generation", *objectives])

    def hypervolume(self, study: str | int) -> pd.DataFrame:
        """Per generation, the hypervolume of the study's front, with the objectives and reference point used."""
        study_row = self.store.study(study)
        if not inspect(self.store.engine).has_table("hypervolumes"):  # stores written before they were recorded
            return pd.DataFrame(columns=HYPERVOLUME_COLUMNS)
        rows = [[study_row.name, h.generation, h.value, h.objectives, h.reference]
                for h in self.store.hypervolumes(study_row.id)]
        return pd.DataFrame(rows, columns=HYPERVOLUME_COLUMNS)

    def baselines(self, study: str | int) -> pd.DataFrame:
        """One row per baseline genome: its method and label, candidate, held-out values, and the run's cost."""
        study_id = self.store.study(study).id
        if not inspect(self.store.engine).has_table("baseline_runs"):  # stores written before baselines existed
            return pd.DataFrame(columns=BASELINE_COLUMNS)
        heldout: dict[int, dict[str, float]] = {}
        for e in self.store.evaluations(study_id, HELDOUT):
            heldout.setdefault(e.candidate_id, {})[e.evaluator] = e.value
        rows = [{"method": r.method, "label": r.label, "candidate": r.candidate_id, "seconds": r.seconds,
                 "passes": r.passes, "settings": r.settings, **heldout.get(r.candidate_id, {})}
                for r in self.store.baseline_runs(study_id)]
        return _frame(rows, BASELINE_COLUMNS)

    def genome(self, study: str | int, candidate: int) -> pd.DataFrame:
        """The level of every unit of one candidate, in the space's unit order (0 = least compressed)."""
        study_row = self.store.study(study)
        levels = Genome.from_json(self.store.candidate(study_row.id, int(candidate)).genome).levels
        units = study_row.space.get("units") or [f"unit {i}" for i in range(len(levels))]
        return pd.DataFrame({"unit": units, "level": levels})


def _frame(rows: list[dict], leading: list[str]) -> pd.DataFrame:
    """Rows as a frame whose leading columns exist even when there are no rows yet."""
    columns = [*leading, *dict.fromkeys(k for row in rows for k in row if k not in leading)]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"generation": "Int64"}) if "generation" in frame else frame
