"""Where the workers compute: ``run.device`` resolved against what the machine (or the Ray cluster) has.

The workers hold the model, the sample pools, the teacher's outputs and the level weights they apply on their
device. With workers on GPUs, the controller computes the teacher's outputs, the level databases (calibration
statistics and builders) and the baselines on this machine's GPU where it has one.
"""

from __future__ import annotations

import ray
import torch

from paretopress.kernel.errors import UserError


def resolve_device(requested: str, executor: str) -> str:
    """``cpu`` or ``cuda``: ``auto`` is cuda where the workers can have a GPU; ``cuda`` without one is refused."""
    if requested == "cpu":
        return "cpu"
    gpus = ray.cluster_resources().get("GPU", 0) if executor == "ray" else torch.cuda.device_count()
    if requested == "auto":
        return "cuda" if gpus else "cpu"
    if not gpus:
        where = "the Ray cluster has no GPU resources" if executor == "ray" else "torch sees no CUDA device here"
        raise UserError(f"run.device: cuda, but {where}; use run.device: cpu (or auto)")
    return "cuda"


def controller_device(device: str) -> str:
    """Where the controller runs its own forward passes: this machine's GPU when the workers use GPUs and torch sees
    one here (a Ray cluster's head may have none)."""
    return "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"


def release_device_memory() -> None:
    """Hand the GPU memory the controller's model held back to the driver: workers on this machine's GPU need it, and
    torch's allocator keeps freed blocks for its own process."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
