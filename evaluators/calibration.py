"""Calibration statistics of a model's linear inputs (X^T X, or any statistic of them), summed in one pass.

The level builders (OBS, Wanda, GPTQ, SparseGPT) and baselines (OWL, SPDY) read them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm import tqdm

from paretopress.evaluators.forward import model_device


def xtx(flat: torch.Tensor) -> torch.Tensor:
    """X^T X of inputs [tokens, features]: the Hessian of a linear layer's squared reconstruction error."""
    return flat.T @ flat


def calibration_xtx(model: nn.Module, units: tuple[str, ...], tokens: torch.Tensor, batch_size: int,
                    statistic: Callable[[torch.Tensor], torch.Tensor] = xtx) -> dict[str, torch.Tensor]:
    """A sum over the calibration tokens of ``statistic`` (X^T X by default) of every unit's input, in one pass.

    Linears that read the same tensor one after the other (q/k/v, gate/up) share one product instead of computing
    it again; the last input is held by reference, so its identity cannot be taken over by a new tensor. The sums
    are on the model's device.
    """
    device = model_device(model)
    sums: dict[str, torch.Tensor] = {}
    last: list = [None, None]  # the last input seen and its product

    def hook(unit: str):
        def accumulate(_module, inputs):
            x = inputs[0]
            if last[0] is not x:
                flat = x.reshape(-1, x.shape[-1]).float()
                last[:] = [x, statistic(flat)]
            if unit in sums:
                sums[unit] += last[1]
            else:
                sums[unit] = last[1].clone()
        return accumulate

    handles = [model.get_submodule(unit).register_forward_pre_hook(hook(unit)) for unit in units]
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, tokens.shape[0], batch_size), desc="calibration statistics", unit="batch"):
                model(input_ids=tokens[start : start + batch_size].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        last[:] = [None, None]
    return sums
