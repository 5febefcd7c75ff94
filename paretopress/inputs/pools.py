"""Token sample pools (calibration and held-out) and the dense model's outputs on them, cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile

from safetensors.torch import load_file, save_file
from torch import nn

from paretopress.evaluators.samples import CALIBRATION, HELDOUT, POOLS, SampleSet
from paretopress.evaluators.teacher import TeacherOutputs, compute_teacher
from paretopress.inputs.cache import cache_dir
from paretopress.inputs.data import Documents, pack_samples
from paretopress.inputs.models import load_tokenizer, model_fingerprint
from paretopress.job import EvaluationSpec

log = logging.getLogger(__name__)


def prepare_pools(model: nn.Module, model_spec: str, documents: Documents, spec: EvaluationSpec,
                  batch_size: int) -> dict[str, SampleSet]:
    """Calibration and held-out samples with teacher outputs; computed once per (model, data, evaluation spec)."""
    settings = spec.model_dump(exclude={"tail_samples", "dtype"})  # how candidates are scored does not change these
    identity = {"model": model_fingerprint(model_spec), "data": documents.fingerprint, **settings}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir("samples") / f"{key}.safetensors"
    if path.exists():
        return _from_tensors(load_file(path))
    tokenizer = load_tokenizer(model_spec)
    counts = {CALIBRATION: spec.calibration_samples, HELDOUT: spec.heldout_samples}
    texts = {CALIBRATION: documents.calibration, HELDOUT: documents.heldout}
    tensors = {}
    for pool, count in counts.items():
        log.info("computing the dense model's outputs on %d %s samples (once)", count, pool)
        tokens = pack_samples(texts[pool], tokenizer, spec.seq_len, count)
        teacher = compute_teacher(model, tokens, spec.top_k, batch_size)
        tensors[f"{pool}.tokens"] = tokens
        tensors.update({f"{pool}.{name}": value for name, value in teacher.to_dict().items()})
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        save_file(tensors, tmp.name)
    os.replace(tmp.name, path)
    return _from_tensors(tensors)


def _from_tensors(tensors: dict) -> dict[str, SampleSet]:
    return {
        pool: SampleSet(
            tokens=tensors[f"{pool}.tokens"],
            teacher=TeacherOutputs(
                tensors[f"{pool}.top_logprobs"], tensors[f"{pool}.top_ids"], tensors[f"{pool}.rest_logprob"]
            ),
        )
        for pool in POOLS
    }
