"""Our GGUF tensor-type encoders (``paretopress.spaces.gguf_types``) against llama.cpp's own, bit for bit.

Quantizes the same float32 rows with ``TYPES[name].quantize`` and with ggml's ``ggml_quantize_chunk`` (no importance
matrix: the reference round-to-nearest quantizers that ``llama-quantize`` uses without one), called through ctypes
from a built ``libggml-base.so``, and counts identical bytes and blocks per type. Rows: Gaussian, heavy-tailed
(Student t, 3 degrees of freedom), one with all-zero and constant blocks, and three of SmolLM2-135M's down_proj
matrices (576 x 1536; a de-quantised 4-bit model). ``--imatrix`` repeats it with an importance matrix (a seeded
positive weight per column): the types with an importance-weighted path (Q4_0, Q5_0) must match llama.cpp's
``llama-quantize --imatrix`` bytes, Q8_0 (which ignores it in both) too.

The library comes from ``--lib`` (the .so, a folder holding it, or a llama-cpp-python wheel), else from an installed
``llama_cpp`` package. One way to get it (builds llama.cpp from source with cmake and g++):

    pip wheel --no-deps llama-cpp-python==0.3.36 -w /tmp/llama_wheel
    .venv/bin/python benchmarks/gguf_types_check.py --lib /tmp/llama_wheel [--no-real]

Without a library the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.util
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' platform-independent weights

from paretopress.spaces.gguf_types import TYPES, TensorType
from tests.support.weights import hashed_rows

LIBRARY = "libggml-base.so"
REAL_UNITS = ("model.layers.0.mlp.down_proj", "model.layers.14.mlp.down_proj", "model.layers.29.mlp.down_proj")


def find_library(given: Path | None, scratch: Path) -> Path | None:
    """``libggml-base.so`` from the path given (file, folder or wheel), else from an installed llama_cpp."""
    if given is None:
        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or not spec.submodule_search_locations:
            return None
        given = Path(next(iter(spec.submodule_search_locations)))
    if given.is_file() and given.suffix != ".whl":
        return given
    if given.is_dir() and not list(given.rglob(LIBRARY)):
        wheels = sorted(given.glob("*.whl"))
        given = wheels[-1] if wheels else given
    if given.suffix == ".whl":
        with zipfile.ZipFile(given) as wheel:
            wheel.extractall(scratch)
        given = scratch
    found = sorted(given.rglob(LIBRARY))
    return found[0] if found else None


def load_ggml(path: Path) -> ctypes.CDLL:
    """The library with ``ggml_quantize_chunk``'s signature declared."""
    lib = ctypes.CDLL(str(path))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def ggml_quantize(lib: ctypes.CDLL, kind: TensorType, rows: np.ndarray,
                  importance: np.ndarray | None = None) -> np.ndarray:
    """llama.cpp's bytes for ``rows`` (float32 [n, cols]), with an importance matrix [cols] where given."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    out = np.zeros((len(rows), kind.row_bytes(rows.shape[1])), dtype=np.uint8)
    imatrix = None if importance is None else np.ascontiguousarray(importance, dtype=np.float32)
    written = lib.ggml_quantize_chunk(int(kind.qtype), rows.ctypes.data, out.ctypes.data, 0, len(rows),
                                      rows.shape[1], None if imatrix is None else imatrix.ctypes.data)
    assert written == out.size, (kind.name, written, out.size)
    return out


def synthetic_rows(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Rows of known shapes and awkward content (zero, constant and tiny blocks, outliers)."""
    awkward = rng.standard_normal((8, 1024)).astype(np.float32)
    awkward[0, :256] = 0  # an all-zero super-block
    awkward[1, 256:512] = 0.25  # a constant one
    awkward[2, :32] = 0  # an all-zero legacy block inside a non-zero super-block
    awkward[3, :256] = -0.25  # a constant negative one
    awkward[4, :256] = 0
    awkward[4, 77] = 3.0  # a lone spike
    awkward[5] *= 1e-6  # scales below float16's normal range
    return {
        "gaussian 256x1536": (0.02 * rng.standard_normal((256, 1536))).astype(np.float32),
        "student-t 256x1024": (0.02 * rng.standard_t(3, (256, 1024))).astype(np.float32),
        "zero/constant 8x1024": awkward,
        "hashed 16x512": hashed_rows(16, 512),
    }


def real_rows() -> dict[str, np.ndarray]:
    """SmolLM2-135M matrices whose rows fit the K-quants (1536 wide)."""
    from paretopress.inputs.models import load_model

    model = load_model("smollm2-135m")
    return {unit.removeprefix("model."): model.get_submodule(unit).weight.detach().float().numpy()
            for unit in REAL_UNITS}


def importance_of(rows: np.ndarray, seed: int) -> np.ndarray:
    """A seeded positive importance per column, spread like real squared activations (a few columns dominate)."""
    return np.random.default_rng(seed).gamma(0.5, 1.0, rows.shape[1]).astype(np.float32)


def compare(lib: ctypes.CDLL, kind: TensorType, rows: np.ndarray,
            importance: np.ndarray | None = None) -> tuple[int, int, int, int, float, float]:
    """(identical bytes, bytes, identical blocks, blocks, our seconds, ggml's seconds) for one type and matrix."""
    start = time.perf_counter()
    ours = kind.quantize(rows, importance)
    our_seconds = time.perf_counter() - start
    start = time.perf_counter()
    theirs = ggml_quantize(lib, kind, rows, importance)
    ggml_seconds = time.perf_counter() - start
    same = ours == theirs
    blocks = same.reshape(-1, kind.block_bytes).all(axis=1)
    return int(same.sum()), same.size, int(blocks.sum()), blocks.size, our_seconds, ggml_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", type=Path, help="libggml-base.so, a folder holding it, or a llama-cpp-python wheel")
    parser.add_argument("--types", nargs="+", default=list(TYPES), choices=list(TYPES))
    parser.add_argument("--no-real", action="store_true", help="skip SmolLM2's matrices")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--imatrix", action="store_true", help="with an importance matrix (Q4_0, Q5_0, Q8_0)")
    args = parser.parse_args()
    if args.imatrix:
        args.types = [name for name in args.types if TYPES[name].weighted is not None or name == "Q8_0"]
    with tempfile.TemporaryDirectory() as scratch:
        path = find_library(args.lib, Path(scratch))
        if path is None:
            print(f"skipped: no {LIBRARY} found (give --lib, or install llama-cpp-python)")
            return 0
        lib = load_ggml(path)
        print(f"library: {path}")
        matrices = synthetic_rows(np.random.default_rng(args.seed))
        if not args.no_real:
            matrices |= real_rows()
        print(f"{'type':5s}  {'identical blocks':>22s}  {'identical bytes':>15s}  {'ours s':>7s}  {'ggml s':>7s}  "
              "sha256 of ggml's hashed 16x512")
        matching = 0
        for name in args.types:
            kind = TYPES[name]
            totals = np.zeros(6)
            for rows in matrices.values():
                totals += compare(lib, kind, rows, importance_of(rows, args.seed) if args.imatrix else None)
            same_bytes, n_bytes, same_blocks, n_blocks, ours, ggml = totals
            matching += same_bytes == n_bytes
            digest = hashlib.sha256(ggml_quantize(lib, kind, matrices["hashed 16x512"]).tobytes()).hexdigest()
            print(f"{name:5s}  {int(same_blocks):>10d} / {int(n_blocks):<9d}  {same_bytes / n_bytes:15.6%}  "
                  f"{ours:7.2f}  {ggml:7.2f}  {digest[:16]}")
        print(f"{matching} of {len(args.types)} types bit for bit identical to llama.cpp on {len(matrices)} matrices: "
              + ", ".join(matrices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
