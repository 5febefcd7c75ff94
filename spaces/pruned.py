"""Checkpoints whose decoder layers differ in width: the one small loader paretopress exports need.

Llama-style configs give every layer the same number of heads and FFN channels, so a checkpoint whose layers were
narrowed by different amounts cannot be described by the config alone. Its ``config.json`` then carries
``layer_layout`` (the layer list's path, and per layer the shape of every linear and which sub-layers are removed)
and an ``auto_map`` entry naming a class of this file, which ``paretopress export`` copies next to the weights as
``modeling_paretopress.py``. Loading needs no paretopress:

    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)

builds the stock architecture, narrows each layer to the recorded shapes, then loads the weights. The attention and
MLP forwards of these architectures take the head count from the tensors (``view(..., -1, head_dim)``), so narrowed
projections run unchanged. This file imports only torch and transformers; keep it that way.
"""

from __future__ import annotations

import torch
import transformers
from torch import nn

LAYOUT = "layer_layout"
LOADER_MODULE = "modeling_paretopress"
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                 "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM")


class DroppedAttention(nn.Module):
    """Stands in for a removed attention sub-layer: contributes nothing to the residual stream."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        return torch.zeros_like(hidden_states), None


class DroppedMLP(nn.Module):
    """Stands in for a removed MLP sub-layer: contributes nothing to the residual stream."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


STUBS = {"attention": DroppedAttention, "mlp": DroppedMLP, "identity": nn.Identity}


def stub_kind(module: nn.Module) -> str | None:
    """The layout name of a stand-in module, or None for a real one."""
    return next((kind for kind, cls in STUBS.items() if type(module) is cls), None)


def record_layout(model: nn.Module, layers_path: str) -> None:
    """Write the model's per-layer shapes and removed sub-layers into its config, with the ``auto_map`` to load it."""
    architecture = type(model).__name__
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{architecture} has no per-layer loader; supported: {', '.join(ARCHITECTURES)}")
    layers = []
    for layer in model.get_submodule(layers_path):
        modules = dict(layer.named_modules())
        layers.append({
            "linears": {name: [m.out_features, m.in_features] for name, m in modules.items()
                        if isinstance(m, nn.Linear)},
            "stubs": {name: kind for name, m in modules.items() if name and (kind := stub_kind(m))},
        })
    setattr(model.config, LAYOUT, {"layers_path": layers_path, "layers": layers})
    model.config.auto_map = {"AutoModelForCausalLM": f"{LOADER_MODULE}.Pruned{architecture}"}


def apply_layout(model: nn.Module, layout: dict) -> None:
    """Replace stubbed sub-modules and re-shape linears as recorded (new modules; the weights are loaded after)."""
    for layer, spec in zip(model.get_submodule(layout["layers_path"]), layout["layers"], strict=True):
        for name, kind in spec["stubs"].items():
            _replace(layer, name, STUBS[kind]())
        for name, (rows, cols) in spec["linears"].items():
            old = layer.get_submodule(name)
            if (old.out_features, old.in_features) != (rows, cols):
                _replace(layer, name, nn.Linear(cols, rows, bias=old.bias is not None, device=old.weight.device,
                                                dtype=old.weight.dtype))


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


class PerLayerWidths:
    """Mixin for a stock causal LM class: narrows the layers to the config's ``layer_layout`` after building them."""

    def __init__(self, config, *args, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        apply_layout(self, getattr(config, LAYOUT))


def _pruned(architecture: str) -> type:
    return type(f"Pruned{architecture}", (PerLayerWidths, getattr(transformers, architecture)), {})


PrunedLlamaForCausalLM = _pruned("LlamaForCausalLM")
PrunedMistralForCausalLM = _pruned("MistralForCausalLM")
PrunedQwen2ForCausalLM = _pruned("Qwen2ForCausalLM")
PrunedQwen3ForCausalLM = _pruned("Qwen3ForCausalLM")
PrunedGemmaForCausalLM = _pruned("GemmaForCausalLM")
PrunedGemma2ForCausalLM = _pruned("Gemma2ForCausalLM")
PrunedGemma3ForCausalLM = _pruned("Gemma3ForCausalLM")
