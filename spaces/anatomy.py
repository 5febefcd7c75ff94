"""Where the decoder layers, attention and MLP sub-modules of a Hugging Face causal LM live.

Llama, Mistral, Qwen2, Phi-3 and Gemma name them alike; GPT-2 style models use ``attn``/``ln_1``. The anatomy is
read once from the model and then addresses modules by dotted name, so spaces never hard-code an architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from paretopress.kernel.errors import UserError

ATTENTION_NAMES = ("self_attn", "attn", "self_attention", "attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm")


@dataclass(frozen=True)
class Anatomy:
    """Dotted path of the decoder-layer list and the names of the parts inside one layer."""

    layers_path: str
    num_layers: int
    attention: str
    mlp: str
    attention_norms: tuple[str, ...]
    mlp_norms: tuple[str, ...]
    final_norm: str | None  # dotted path of the norm that reads the last layer's output (None if there is none)

    def layer_name(self, index: int) -> str:
        return f"{self.layers_path}.{index}"

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers_path)

    def replace_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        parent_path, _, attr = self.layers_path.rpartition(".")
        setattr(model.get_submodule(parent_path), attr, layers)


def _norm_names(layer: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Norms that feed (or, Gemma-style, post-process) only the attention, and only the MLP."""
    children = {name for name, _ in layer.named_children()}
    if "pre_feedforward_layernorm" in children:  # Gemma 2/3: post-attention norm wraps the attention output
        attention = ("input_layernorm", "post_attention_layernorm")
        mlp = ("pre_feedforward_layernorm", "post_feedforward_layernorm")
    else:
        attention = ("input_layernorm", "ln_1")
        mlp = ("post_attention_layernorm", "ln_2")
    return tuple(n for n in attention if n in children), tuple(n for n in mlp if n in children)


def _final_norm(model: nn.Module, layers_path: str) -> str | None:
    """The decoder's norm after its layers, a sibling of the layer list (``norm``; GPT-2: ``ln_f``)."""
    parent = layers_path.rpartition(".")[0]
    decoder = model.get_submodule(parent) if parent else model
    name = next((n for n in FINAL_NORM_NAMES if isinstance(getattr(decoder, n, None), nn.Module)), None)
    return None if name is None else f"{parent}.{name}".lstrip(".")


def read_anatomy(model: nn.Module) -> Anatomy:
    """Find the decoder layers: the first ModuleList whose layers hold an attention and an MLP sub-module."""
    for path, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        first = module[0]
        attention = next((n for n in ATTENTION_NAMES if isinstance(getattr(first, n, None), nn.Module)), None)
        mlp = next((n for n in MLP_NAMES if isinstance(getattr(first, n, None), nn.Module)), None)
        if attention and mlp:
            attention_norms, mlp_norms = _norm_names(first)
            return Anatomy(path, len(module), attention, mlp, attention_norms, mlp_norms, _final_norm(model, path))
    raise UserError(
        f"model class {type(model).__name__} is not supported: no list of decoder layers with attention and MLP "
        "sub-modules was found"
    )
