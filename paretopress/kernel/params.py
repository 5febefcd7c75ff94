"""Parameter counting shared by spaces (exact genome costs) and evaluators (measured on the materialised model)."""

from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Parameters reachable from the module tree, tied tensors counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def count_nonzero_parameters(model: nn.Module) -> int:
    """Non-zero parameters, tied tensors counted once: what a sparse format stores, so pruning shows in the front."""
    return sum(int(p.count_nonzero()) for p in {id(p): p for p in model.parameters()}.values())
