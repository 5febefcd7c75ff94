"""``--format compressed-tensors``: a checkpoint transformers and vLLM load quantized, from a quant genome.

Each bit-width the genome uses is one config group of the ``pack-quantized`` format (integer codes packed into
int32, one scale per group of ``group_size`` input columns), written by the compressed-tensors library itself from
the codes and scales the search evaluated; linears left at 16 bits stay dense (``ignore``). vLLM serves 4- and
8-bit weights and fuses q/k/v and gate/up into one kernel each, so those are the widths written and fused linears
must share theirs. Asymmetric checkpoints of this format do not load back in transformers (the library sizes packed
zero points as unpacked ones when it builds the model), so the quant space must be searched with
``symmetric: true``: its codes then need no zero point.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from paretopress.kernel.errors import UserError
from paretopress.report.formats.base import FORMATS, ExportFormat
from paretopress.spaces import pruned
from paretopress.spaces.anatomy import is_linear
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome
from paretopress.spaces.levels import QuantizedWeight
from paretopress.spaces.linear import TIED

SERVED_BITS = (4, 8)
HINT = "search kind quant with symmetric: true, widths from 4, 8 and 16, and tie: true"


@FORMATS.register("compressed-tensors")
class CompressedTensors(ExportFormat):
    name = "compressed-tensors"

    def write(self, space: Space, model: PreTrainedModel, genome: Genome, tokenizer: PreTrainedTokenizerBase,
              out: Path) -> list[Path]:
        from compressed_tensors.compressors import ModelCompressor

        chosen = space.quantized_weights(model, genome)
        names = {module: name for name, module in model.named_modules() if module in chosen}
        _check(chosen, names)
        model = space.materialise(model, genome)  # the dequantized weights: the library re-derives the same codes
        if hasattr(model.config, pruned.LAYOUT):
            raise UserError("export --format compressed-tensors: this candidate's layers differ in shape; use "
                            "--format transformers")
        _attach_scales(model, {name: chosen[module] for name, module in model.named_modules() if module in chosen})
        compressor = ModelCompressor.from_pretrained_model(model, "pack-quantized")
        compressor.compress_model(model)
        model.save_pretrained(out)
        compressor.update_config(out)
        tokenizer.save_pretrained(out)
        return sorted(out.glob("*.safetensors"))

    def load(self, out: Path) -> nn.Module:
        return AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()


def _check(chosen: dict[nn.Module, QuantizedWeight], names: dict[nn.Module, str]) -> None:
    """One line for the first thing this format cannot hold, before anything is written."""
    if not chosen:
        raise UserError(f"export --format compressed-tensors writes quantized linears and this genome has none; {HINT}")
    for module, weight in chosen.items():
        if not isinstance(module, nn.Linear):
            raise UserError(f"export --format compressed-tensors quantizes nn.Linear modules only, and {names[module]} "
                            f"is a {type(module).__name__}; use --format transformers")
        if not weight.symmetric:
            raise UserError("export --format compressed-tensors: asymmetric (zero-point) checkpoints of this format "
                            f"do not load back in transformers; {HINT}")
        if weight.bits not in SERVED_BITS:
            raise UserError(f"export --format compressed-tensors: {names[module]} is at {weight.bits} bits, and vLLM "
                            f"serves {' and '.join(map(str, SERVED_BITS))}; {HINT}")
        if weight.codes.shape[1] % weight.group_size:
            raise UserError(f"export --format compressed-tensors: {names[module]} has rows of {weight.codes.shape[1]} "
                            f"weights, not a multiple of group_size {weight.group_size}; choose a group size that "
                            "divides every linear's input width")
    bits = {name: chosen[module].bits for module, name in names.items()}
    for name in bits:
        parent, _, leaf = name.rpartition(".")
        fused = next((members for members in TIED if leaf in members), ())
        widths = {bits.get(f"{parent}.{member}", 16) for member in fused}
        if len(widths) > 1:
            raise UserError(f"export --format compressed-tensors: vLLM fuses {'/'.join(fused)} of {parent} into one "
                            f"kernel, so they need one bit-width, not {sorted(widths)}; {HINT}")


def _attach_scales(model: PreTrainedModel, weights: dict[str, QuantizedWeight]) -> None:
    """The compressed-tensors quantization schemes on the model's linears (by their names after materialising: a
    dropped block's are gone, later ones renumbered), with the search's own scales."""
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
    )

    groups = {}
    for bits in sorted({weight.bits for weight in weights.values()}):
        members = [name for name, weight in weights.items() if weight.bits == bits]
        group_size = weights[members[0]].group_size
        args = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group", group_size=group_size)
        groups[f"w{bits}"] = QuantizationScheme(targets=members, weights=args)
    dense = [name for name, module in model.named_modules() if is_linear(module) and name not in weights]
    apply_quantization_config(model, QuantizationConfig(config_groups=groups, ignore=dense), show_progress=False)
    with torch.no_grad():
        for name, weight in weights.items():
            model.get_submodule(name).weight_scale.copy_(weight.scale.float())  # float32: (q - 0) * s is exact
