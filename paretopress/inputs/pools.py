"""Token sample pools (calibration and held-out) and the dense model's outputs on them, cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile

from safetensors.torch import load_file, save_file
from torch import nn

from paretopress.evaluators.samples import CALIBRATION, CONFIRMATION, HELDOUT, SampleSet
from paretopress.evaluators.teacher import TeacherOutputs, compute_teacher
from paretopress.inputs.cache import cache_dir
from paretopress.inputs.data import Documents, bos_prefix, pack_samples
from paretopress.inputs.models import load_tokenizer, model_fingerprint
from paretopress.job import EvaluationSpec

log = logging.getLogger(__name__)


def prepare_pools(model: nn.Module, model_spec: str, documents: Documents, spec: EvaluationSpec,
                  batch_size: int, confirmation: Documents | None = None) -> dict[str, SampleSet]:
    """Calibration and held-out samples with teacher outputs, and the confirmation samples of another text when
    there is one (every document of it, at ``spec.confirmation_seq_len``); computed once per (model, data,
    evaluation spec)."""
    # How candidates are scored does not change the pools; the confirmation pool's settings only where there is one
    # (so the pools of a job without it keep the cache key they had before it existed).
    settings = spec.model_dump(exclude={"tail_samples", "dtype", "heldout_data", "heldout_seq_len"})
    identity = {"model": model_fingerprint(model_spec), "data": documents.fingerprint, **settings}
    if confirmation is not None:
        identity["confirmation"] = [confirmation.fingerprint, spec.confirmation_seq_len]
    tokenizer = load_tokenizer(model_spec)
    if bos_prefix(tokenizer):  # samples that start with BOS are other samples (keys without it stay as they were)
        identity["bos"] = True
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir("samples") / f"{key}.safetensors"
    if path.exists():
        return _from_tensors(load_file(path))
    wanted = {CALIBRATION: (documents.calibration, spec.calibration_samples, spec.seq_len),
              HELDOUT: (documents.heldout, spec.heldout_samples, spec.seq_len)}
    if confirmation is not None:
        wanted[CONFIRMATION] = (confirmation.calibration + confirmation.heldout, spec.heldout_samples,
                                spec.confirmation_seq_len)
    tensors = {}
    for pool, (texts, count, seq_len) in wanted.items():
        log.info("computing the dense model's outputs on %d %s samples (once)", count, pool)
        tokens = pack_samples(texts, tokenizer, seq_len, count)
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
        for pool in (CALIBRATION, HELDOUT, CONFIRMATION) if f"{pool}.tokens" in tensors
    }
