"""Where the decoder layers, attention and MLP sub-modules of a Hugging Face causal LM live, and how they differ.

Llama, Mistral, Qwen2/3, Phi-3 and Gemma name them alike; GPT-2 style models use ``attn``/``ln_1``. The anatomy is
read once from the model and then addresses modules by dotted name, so spaces never hard-code an architecture.
What else differs between architectures is data here too: Gemma's norms around each sub-layer, the config entries
that hold one value per layer (Gemma's and Qwen's ``layer_types``: which mask and rotary embedding each layer gets),
GPT-2's ``Conv1D`` projections, which store their weight transposed, and the projections some models fuse.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from paretopress.kernel.errors import UserError

ATTENTION_NAMES = ("self_attn", "attn", "self_attention", "attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm")
FUSED = {"qkv_proj": "q/k/v", "c_attn": "q/k/v", "W_pack": "q/k/v", "gate_up_proj": "gate/up"}  # leaf -> what it fuses


def is_linear(module: nn.Module) -> bool:
    """A projection: ``nn.Linear``, or GPT-2's ``Conv1D`` (the same map with its weight stored [in, out])."""
    return isinstance(module, nn.Linear | Conv1D)


def linear_weight(module: nn.Module) -> torch.Tensor:
    """A projection's weight as ``nn.Linear`` holds it, [out, in]: for ``Conv1D`` a transposed view of its own."""
    return module.weight.T if isinstance(module, Conv1D) else module.weight


def set_linear_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Make ``weight`` [out, in] the projection's parameter (a reference, transposed back for ``Conv1D``)."""
    module.weight = nn.Parameter(weight.T if isinstance(module, Conv1D) else weight, requires_grad=False)


def fused_projections(module: nn.Module) -> list[str]:
    """What the module's fused projections hold, e.g. ``["q/k/v into qkv_proj"]`` (Phi-3; GPT-2's ``c_attn``)."""
    return [f"{FUSED[name]} into {name}" for name, _ in module.named_children() if name in FUSED]


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
    per_layer: tuple[tuple[str, tuple], ...] = ()  # config entries with one value per layer, the dense model's

    def layer_name(self, index: int) -> str:
        return f"{self.layers_path}.{index}"

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers_path)

    def norms_of(self, part: str) -> tuple[str, ...]:
        """The norms that serve only the sub-layer ``part`` (the attention's or the MLP's attribute name)."""
        return self.attention_norms if part == self.attention else self.mlp_norms

    def replace_layers(self, model: nn.Module, layers: list[nn.Module], indices: Sequence[int]) -> None:
        """Make ``layers``, the dense model's layers ``indices``, the decoder's layer list, and cut the per-layer
        config entries to match (Gemma's forward picks each layer's mask by its place in the list)."""
        decoder, attr, config = self._decoder(model)
        setattr(decoder, attr, nn.ModuleList(layers))
        for name, values in self.per_layer:
            setattr(config, name, [values[i] for i in indices])

    @contextmanager
    def running(self, model: nn.Module, layers: list[nn.Module], indices: Sequence[int]) -> Iterator[None]:
        """``replace_layers`` until exit; then the layer list and the per-layer config entries as they were."""
        decoder, attr, config = self._decoder(model)
        before = getattr(decoder, attr), {name: getattr(config, name) for name, _ in self.per_layer}
        self.replace_layers(model, layers, indices)
        try:
            yield
        finally:
            setattr(decoder, attr, before[0])
            for name, value in before[1].items():
                setattr(config, name, value)

    def _decoder(self, model: nn.Module) -> tuple[nn.Module, str, object]:
        """The module holding the layer list, the list's attribute, and the config its forward reads."""
        parent, _, attr = self.layers_path.rpartition(".")
        decoder = model.get_submodule(parent)
        return decoder, attr, _config(decoder, model)


def _config(decoder: nn.Module, model: nn.Module):
    return getattr(decoder, "config", None) or model.config


def _per_layer(config, num_layers: int) -> tuple[tuple[str, tuple], ...]:
    """Config entries holding one value per layer (``layer_types``), as lists of ``num_layers`` values."""
    return tuple((name, tuple(value)) for name, value in vars(config).items()
                 if isinstance(value, list) and len(value) == num_layers)


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
            config = _config(model.get_submodule(path.rpartition(".")[0]), model)
            return Anatomy(path, len(module), attention, mlp, attention_norms, mlp_norms, _final_norm(model, path),
                           _per_layer(config, len(module)))
    raise UserError(
        f"model class {type(model).__name__} is not supported: no list of decoder layers with attention and MLP "
        "sub-modules was found"
    )
