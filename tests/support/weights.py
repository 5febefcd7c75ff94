"""Weights with the same bits on every platform and numpy version, for checks that compare bytes with llama.cpp."""

import numpy as np


def hashed_rows(rows: int, cols: int) -> np.ndarray:
    """Heavy-tailed weights from integer hashing and exact float32 steps, with an all-zero and a constant
    super-block (``tests/test_gguf_types.py`` holds llama.cpp's bytes for ``hashed_rows(16, 512)``, which
    ``benchmarks/gguf_types_check.py`` prints)."""
    h = (np.arange(rows * cols, dtype=np.int64) * 2654435761 + 12345) % 2**32
    h = (h ^ (h >> 15)) * 2246822519 % 2**32
    u = (h ^ (h >> 13)).astype(np.float32) / np.float32(2**32) - np.float32(0.5)
    weights = (np.float32(0.1) * u * u * u + np.float32(0.01) * u).reshape(rows, cols)
    weights[0, :256] = 0  # an all-zero super-block
    weights[1, 256:512] = 0.25  # a constant one
    return weights
