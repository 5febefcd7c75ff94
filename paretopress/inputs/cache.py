"""Where paretopress keeps converted models, cleaned text, teacher outputs and level databases."""

import os
from pathlib import Path

from paretopress.kernel.errors import UserError

CACHE_ENV = "PARETOPRESS_CACHE"


def cache_dir(*parts: str) -> Path:
    """The cache directory (``$PARETOPRESS_CACHE`` or ``~/.cache/paretopress``), sub-path created.

    A cache that cannot be used is the user's to fix (a file where the folder belongs, a read-only folder), so it is
    refused in one line that says how to choose another, before any work is cached in it.
    """
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "paretopress")
    path = root.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot use the cache folder {root}: {error.strerror}; set {CACHE_ENV} to a writable "
                        "folder") from error
    if not os.access(path, os.W_OK):
        raise UserError(f"cannot use the cache folder {root}: {path} is not writable; set {CACHE_ENV} to a "
                        "writable folder")
    return path
