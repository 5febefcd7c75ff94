"""paretopress: non-uniform compression search for Hugging Face causal LMs.

The Python API (``open_store`` and the plot functions, from ``paretopress.api``) loads on first use, so that
``import paretopress`` and the CLI's argument parsing stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from paretopress.api import StoreView, open_store, plot_front, plot_genome, plot_hypervolume

__all__ = ["StoreView", "open_store", "plot_front", "plot_genome", "plot_hypervolume"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(import_module("paretopress.api"), name)
    raise AttributeError(f"module 'paretopress' has no attribute {name!r}")
