"""Where the workers compute: ``run.device`` resolved against what the machine (or the Ray cluster) has.

Only the workers move to a GPU: they hold the model, the sample pools, the teacher's outputs and the level weights
they apply on their device. The controller, the teacher's outputs, the level databases and the baselines are
computed on this machine's CPU, as before.
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
