"""``paretopress export``: a chosen candidate as a config file and the files of one format (``formats/``).

The export re-measures held-out metrics on what the format's files load back as and reports them next to the
store's values, with the bytes the weights take on disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from paretopress.evaluators.metrics import score
from paretopress.evaluators.samples import HELDOUT
from paretopress.inputs.data import load_documents
from paretopress.inputs.models import load_model, load_tokenizer
from paretopress.inputs.pools import prepare_pools
from paretopress.job import JobSpec
from paretopress.kernel.errors import UserError
from paretopress.report.formats import FORMATS
from paretopress.report.front import best_candidate
from paretopress.run import build_space, confirmation_documents
from paretopress.search.controller import REPORT_EVALUATORS
from paretopress.spaces.genome import Genome
from paretopress.store.store import Store

CONFIG_FILE = "paretopress.json"


@dataclass
class ExportReport:
    out: Path
    stored: dict[str, float]
    measured: dict[str, float]
    files: dict[str, int]  # the files holding the weights -> their bytes on disk
    runtime: dict[str, dict[str, float]]  # runtime name -> the metrics it computed from the files

    @property
    def bytes(self) -> int:
        return sum(self.files.values())

    def relative_difference(self, metric: str) -> float | None:
        if metric not in self.stored:
            return None
        return abs(self.measured[metric] - self.stored[metric]) / abs(self.stored[metric])


def export_candidate(db_path: str | Path, study_ref: str, candidate_ref: str, out: str | Path,
                     force: bool = False, threads: int | None = None, fmt: str = "transformers") -> ExportReport:
    out = Path(out)
    writer = FORMATS[fmt]()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UserError(f"{out} exists and is not empty; choose another directory or pass --force")
    store = Store(db_path, readonly=True)
    try:
        study = store.study(study_ref)
        candidate_id = _candidate_id(store, study.id, candidate_ref)
        candidate = store.candidate(study.id, candidate_id)
        stored = {e.evaluator: e.value for e in store.evaluations(study.id, HELDOUT) if e.candidate_id == candidate_id}
    finally:
        store.close()
    if threads:
        torch.set_num_threads(threads)
    job = JobSpec.from_stored(study.name, study.spec)
    documents = load_documents(job.data, heldout_fraction=job.evaluation.heldout_fraction)
    model = load_model(job.model)
    # the study's own pools, the confirmation pool among them, so the run's cached teacher outputs are reused
    pools = prepare_pools(model, job.model, documents, job.evaluation, job.run.batch_size, confirmation_documents(job))
    space = build_space(job, model, documents)
    genome = Genome.from_json(candidate.genome)
    cost = space.cost(genome)
    files = {path.name: path.stat().st_size
             for path in writer.write(space, model, genome, load_tokenizer(job.model), out)}
    heldout = pools[HELDOUT]
    measured = score(writer.load(out), heldout.tokens, heldout.teacher, REPORT_EVALUATORS, job.run.batch_size)
    runtime = writer.runtime_metrics(out, heldout.tokens, heldout.teacher, REPORT_EVALUATORS)
    report = ExportReport(out, stored, measured, files, runtime)
    config = {
        "study": study.name,
        "candidate": candidate_id,
        "origin": candidate.origin,
        "model": job.model,
        "data": job.data,
        "space": {k: v for k, v in space.describe().items() if k != "units"},
        "levels": space.as_mapping(genome),
        "cost": cost,
        "format": fmt,
        "files": files,
        "bytes": report.bytes,
        "metrics": {"store": stored, "export": measured, **runtime, "pool": HELDOUT,
                    "samples": job.evaluation.heldout_samples, "seq_len": job.evaluation.seq_len},
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return report


def _candidate_id(store: Store, study_id: int, ref: str) -> int:
    if str(ref) == "best":
        return best_candidate(store, study_id)
    if not (str(ref).isascii() and str(ref).isdigit()):
        raise UserError(f"--candidate must be a candidate id or 'best', not {ref!r}")
    return int(ref)
