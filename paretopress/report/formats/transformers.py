"""``--format transformers``: a safetensors checkpoint plain ``transformers`` loads (the default).

Dropped blocks and narrowed sub-layers are smaller tensors; sparse weights are zeros in dense tensors and quantized
ones their dequantized values, at the float size.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from paretopress.report.formats.base import FORMATS, ExportFormat
from paretopress.spaces import pruned
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome


@FORMATS.register("transformers")
class TransformersCheckpoint(ExportFormat):
    name = "transformers"

    def write(self, space: Space, model: PreTrainedModel, genome: Genome, tokenizer: PreTrainedTokenizerBase,
              out: Path) -> list[Path]:
        save_checkpoint(space.materialise(model, genome), out)
        tokenizer.save_pretrained(out)
        return sorted(out.glob("*.safetensors"))

    def load(self, out: Path) -> nn.Module:
        remote = (out / f"{pruned.LOADER_MODULE}.py").is_file()
        return AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, trust_remote_code=remote).eval()


def save_checkpoint(model: PreTrainedModel, out: Path) -> bool:
    """``save_pretrained``, plus the per-layer loader where the config cannot describe the shapes; whether it did.

    Such a checkpoint loads with ``AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)``.
    """
    model.save_pretrained(out)
    remote = hasattr(model.config, pruned.LAYOUT)
    if remote:
        shutil.copyfile(pruned.__file__, out / f"{pruned.LOADER_MODULE}.py")
    return remote
