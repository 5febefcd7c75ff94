"""Every space kind's job-file spec, registered by importing its module here (one line per kind)."""

from paretopress.spaces.specs import depth, gguf, joint, quant, sparsity, width  # noqa: F401 - registers the kinds
from paretopress.spaces.specs.base import SPACES, Inputs, Relaxation, SpaceSpec


def budget_text(space: dict) -> str:
    """A stored space spec's budget in one short string (``drop=6``; ``drop=4, bits=3.0`` for joint spaces)."""
    return SPACES[SPACES.kind_of(space)].model_validate(space).budget_text()


__all__ = ["SPACES", "Inputs", "Relaxation", "SpaceSpec", "budget_text"]
