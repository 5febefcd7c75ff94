"""Held-out metrics of a GGUF file as llama.cpp itself computes them, through llama-cpp-python.

llama-cpp-python builds llama.cpp from source (about 15 minutes on 2 cores), so it is an optional extra
(``pip install '.[llamacpp]'``, ``make test-llamacpp``); without it an export says that the file was not run.
llama.cpp's logits go through the same evaluators as the store's (KL against the same teacher outputs, perplexity),
one sample per context, fed as token ids so that the comparison does not depend on llama.cpp's tokenizer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from paretopress.evaluators.metrics import Tally
from paretopress.evaluators.teacher import TeacherOutputs

INSTALL = "pip install '.[llamacpp]'"


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def open_llama(path: Path, **options):
    """A ``llama_cpp.Llama`` on ``path``; on a CPU with AMX, its weights stay in llama.cpp's plain CPU buffers.

    llama.cpp repacks weights into "extra" buffer types where the CPU has them; the AMX one segfaults in the first
    product on Sapphire Rapids CPUs (ggml-org/llama.cpp#20824, still open). ``Llama`` does not expose the switch
    (``use_extra_bufts`` of the model parameters), so on such a CPU the defaults it starts from are given with it
    off while the file loads. Elsewhere llama.cpp keeps its faster repacked weights.
    """
    import llama_cpp.llama_cpp as native
    from llama_cpp import Llama

    defaults = native.llama_model_default_params

    def plain_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    if b"AMX_INT8 = 1" in native.llama_print_system_info():
        native.llama_model_default_params = plain_buffers
    try:
        return Llama(model_path=str(path), verbose=False, **options)
    finally:
        native.llama_model_default_params = defaults


def score_file(path: Path, tokens: torch.Tensor, teacher: TeacherOutputs, names: tuple[str, ...],
               threads: int) -> dict[str, float]:
    """The token metrics among ``names`` of llama.cpp's logits on each row of ``tokens`` [samples, seq]."""
    seq = tokens.shape[1]
    llm = open_llama(path, n_ctx=seq, n_batch=seq, logits_all=True, n_threads=threads)
    tally = Tally(tuple(name for name in names if name != "params"))
    try:
        for row in range(tokens.shape[0]):
            llm.reset()
            llm.eval(tokens[row].tolist())
            logits = torch.from_numpy(np.array(llm.scores[:seq], dtype=np.float32))[None]
            tally.add(logits, tokens[row:row + 1], teacher.rows(slice(row, row + 1)))
    finally:
        llm.close()
    return tally.values(None)
