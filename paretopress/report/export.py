"""``paretopress export``: a chosen candidate as a config file and a checkpoint plain transformers loads.

The export re-measures held-out metrics on the reloaded checkpoint and reports them next to the store's values.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from paretopress.evaluators.metrics import score
from paretopress.evaluators.samples import HELDOUT
from paretopress.inputs.data import load_documents
from paretopress.inputs.models import load_model, load_tokenizer
from paretopress.inputs.pools import prepare_pools
from paretopress.job import JobSpec
from paretopress.kernel.errors import UserError
from paretopress.report.front import best_candidate
from paretopress.run import build_space
from paretopress.search.controller import REPORT_EVALUATORS
from paretopress.spaces import pruned
from paretopress.spaces.genome import Genome
from paretopress.store.store import Store

CONFIG_FILE = "paretopress.json"


@dataclass
class ExportReport:
    out: Path
    stored: dict[str, float]
    measured: dict[str, float]

    def relative_difference(self, metric: str) -> float | None:
        if metric not in self.stored:
            return None
        return abs(self.measured[metric] - self.stored[metric]) / abs(self.stored[metric])


def export_candidate(db_path: str | Path, study_ref: str, candidate_ref: str, out: str | Path,
                     force: bool = False, threads: int | None = None) -> ExportReport:
    out = Path(out)
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
    pools = prepare_pools(model, job.model, documents, job.evaluation, job.run.batch_size)
    space = build_space(job, model, documents)
    genome = Genome.from_json(candidate.genome)
    remote = save_checkpoint(space.materialise(model, genome), out)
    load_tokenizer(job.model).save_pretrained(out)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, trust_remote_code=remote).eval()
    heldout = pools[HELDOUT]
    measured = score(reloaded, heldout.tokens, heldout.teacher, REPORT_EVALUATORS, job.run.batch_size)
    config = {
        "study": study.name,
        "candidate": candidate_id,
        "origin": candidate.origin,
        "model": job.model,
        "data": job.data,
        "space": {k: v for k, v in space.describe().items() if k != "units"},
        "levels": space.as_mapping(genome),
        "cost": space.cost(genome),
        "metrics": {"store": stored, "export": measured, "pool": HELDOUT, "samples": job.evaluation.heldout_samples,
                    "seq_len": job.evaluation.seq_len},
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return ExportReport(out, stored, measured)


def save_checkpoint(model: PreTrainedModel, out: Path) -> bool:
    """``save_pretrained``, plus the per-layer loader where the config cannot describe the shapes; whether it did.

    Such a checkpoint loads with ``AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)``.
    """
    model.save_pretrained(out)
    remote = hasattr(model.config, pruned.LAYOUT)
    if remote:
        shutil.copyfile(pruned.__file__, out / f"{pruned.LOADER_MODULE}.py")
    return remote


def _candidate_id(store: Store, study_id: int, ref: str) -> int:
    if str(ref) == "best":
        return best_candidate(store, study_id)
    if not (str(ref).isascii() and str(ref).isdigit()):
        raise UserError(f"--candidate must be a candidate id or 'best', not {ref!r}")
    return int(ref)
