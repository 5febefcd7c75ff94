"""Where paretopress keeps converted models, cleaned text, teacher outputs and level databases."""

import os
from pathlib import Path

CACHE_ENV = "PARETOPRESS_CACHE"


def cache_dir(*parts: str) -> Path:
    """The cache directory (``$PARETOPRESS_CACHE`` or ``~/.cache/paretopress``), sub-path created."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "paretopress")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
