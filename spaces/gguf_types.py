"""GGUF tensor types as a codec: each type's block geometry, exact bits per weight, and the bytes a GGUF file stores.

A GGUF export with per-tensor types found by search has to cost each tensor at the bytes llama.cpp will read, and to
write those bytes itself. The legacy types (F16 ... Q4_0) quantize through gguf's own numpy code. gguf has no
quantizer for the K-quants, so this module encodes them in numpy, vectorised over blocks, following llama.cpp's
round-to-nearest reference quantizers (``quantize_row_q*_K_ref`` in ggml-quants.c, the path ``llama-quantize`` takes
without an importance matrix) operation for operation in float32, sums left to right, so the bytes can match
llama.cpp's bit for bit (``benchmarks/gguf_types_check.py`` compares them). Decoding always goes through
``gguf.quants.dequantize``, so the layout is checked against gguf's reading of it, not against our own.

Shapes follow GGUF: a weight matrix ``[rows, cols]`` is quantized along its rows (``cols`` is the row length a type
must fit), and its bytes are ``uint8 [rows, cols / block * block_bytes]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)  # llama.cpp treats a group whose largest magnitude is below this as all zero

#: float32 blocks [n, block] -> their bytes [n, block_bytes]
Encoder = Callable[[np.ndarray], np.ndarray]
#: float32 blocks [n, block] and each weight's importance [n, block] -> their bytes [n, block_bytes]
WeightedEncoder = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TensorType:
    """One GGUF tensor type: ``block`` weights are stored in ``block_bytes`` bytes, scales included."""

    name: str
    qtype: GGMLQuantizationType
    block: int
    block_bytes: int
    encoder: Encoder | None = None  # None: gguf's own quantizer
    weighted: WeightedEncoder | None = None  # llama.cpp's path with an importance matrix; None: it ignores one

    @property
    def bits_per_weight(self) -> float:
        """Exact storage cost per weight, scales included."""
        return 8 * self.block_bytes / self.block

    def fits(self, row_length: int) -> bool:
        """Whether rows of this length split into whole blocks (K-quants need multiples of 256)."""
        return row_length % self.block == 0

    def row_bytes(self, row_length: int) -> int:
        """Bytes one row takes in a GGUF file."""
        return row_length // self.block * self.block_bytes

    def quantize(self, weights: np.ndarray, importance: np.ndarray | None = None) -> np.ndarray:
        """The bytes GGUF stores for ``weights`` (float [rows, cols]): uint8 [rows, row_bytes(cols)].

        ``importance`` [cols] is an importance matrix (llama.cpp's imatrix: the mean squared input of each column):
        types with a ``weighted`` path then choose each block's scale for the importance-weighted error, as
        ``llama-quantize --imatrix`` does; the others ignore it, as llama.cpp does for them.
        """
        rows, cols = weights.shape
        if not self.fits(cols):
            raise ValueError(f"{self.name} needs rows of a multiple of {self.block} weights, not {cols}")
        weights = np.ascontiguousarray(weights, dtype=F32)
        if importance is not None and self.weighted is not None:
            blocks, emphasis = (a.reshape(-1, self.block) for a in _emphasis(weights, importance))
            with np.errstate(divide="ignore", invalid="ignore"):
                data = self.weighted(blocks, emphasis)
        elif self.encoder is None:
            data = quants.quantize(weights, self.qtype)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):  # masked lanes of all-zero groups are discarded
                data = self.encoder(weights.reshape(-1, self.block))
        return np.ascontiguousarray(data).view(np.uint8).reshape(rows, self.row_bytes(cols))

    def dequantize(self, data: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The float32 weights [rows, cols] that llama.cpp reads from ``data`` (decoded by gguf)."""
        rows, cols = shape
        return quants.dequantize(data.reshape(rows, self.row_bytes(cols)), self.qtype).reshape(shape)


# ---- float32 primitives that round as llama.cpp's C code does


def _seq_sum(values: np.ndarray) -> np.ndarray:
    """Sum over the last axis left to right in float32, as the C loops accumulate (numpy's sum is pairwise)."""
    return np.cumsum(values, axis=-1, dtype=F32)[..., -1]


def _nearest(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """llama.cpp's ``nearest_int`` (round half to even) clamped to [low, high], as int32."""
    return np.clip(np.rint(values), low, high).astype(np.int32)


def _byte(values: np.ndarray) -> np.ndarray:
    """``nearest_int`` stored into a uint8, wrapping as the C assignment does."""
    return (np.rint(values).astype(np.int64) & 0xFF).astype(np.int32)


def _half(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A float32 stored as GGUF's float16 (round to nearest even): its two little-endian bytes and its value."""
    half = values.astype("<f2")
    return half[..., None].view(np.uint8), half.astype(F32)


def _signed_max(values: np.ndarray) -> np.ndarray:
    """The value of largest magnitude along the last axis, sign kept; the first one on ties, as the C scans keep."""
    index = np.argmax(np.abs(values), axis=-1)[..., None]
    return np.take_along_axis(values, index, axis=-1)[..., 0]


# ---- the group quantizers of ggml-quants.c, vectorised over groups (last axis: the weights of one group)


def _qx_quants(x: np.ndarray, nmax: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``make_qx_quants`` with rmse_type 1: a symmetric scale tried at 19 grid points, each weight's error weighted
    by x^2, or by ``weights`` where given (an importance matrix).

    Returns (scale, codes in [0, 2 nmax)).
    """
    peak = _signed_max(x)
    empty = np.abs(peak) < GROUP_MAX_EPS
    peak = np.where(empty, F32(1), peak)[..., None]
    w = x * x if weights is None else weights

    def attempt(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        codes = _nearest(iscale * x, -nmax, nmax - 1)
        level = codes.astype(F32)
        return codes, _seq_sum(w * x * level), _seq_sum(w * level * level)

    codes, sumlx, suml2 = attempt(F32(-nmax) / peak)
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        trial, slx, sl2 = attempt(-(F32(nmax) + F32(0.1) * F32(step)) / peak)
        better = (sl2 > 0) & (slx * slx > best * sl2)
        codes = np.where(better[..., None], trial, codes)
        scale = np.where(better, slx / sl2, scale)
        best = np.where(better, scale * slx, best)
    codes = np.where(empty[..., None], 0, codes + nmax)
    return np.where(empty, F32(0), scale), codes


def _qkx2_quants(x: np.ndarray, weights: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
                 use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``make_qkx2_quants``: an asymmetric scale and min, least squares over a grid of ``nstep + 1`` trial scales.

    Returns (scale, min to subtract (>= 0), codes in [0, nmax]).
    """
    top, minimum = x.max(axis=-1), np.minimum(x.min(axis=-1), F32(0))
    flat = top == minimum
    top = np.where(flat, F32(1), top)  # flat groups: codes 0, scale 0 (set at the end)
    sum_w, sum_x = _seq_sum(weights), _seq_sum(weights * x)

    def codes_at(step_scale: np.ndarray) -> np.ndarray:
        # llama.cpp spans the trial grid from the best min so far, not from the group's minimum
        iscale = step_scale / (top - minimum)
        return _nearest(iscale[..., None] * (x - minimum[..., None]), 0, nmax)

    def error(scale: np.ndarray, level: np.ndarray, minimum: np.ndarray) -> np.ndarray:
        diff = scale[..., None] * level + minimum[..., None] - x
        return _seq_sum(weights * (np.abs(diff) if use_mad else diff * diff))

    codes = codes_at(np.full_like(top, nmax))
    scale = F32(1) / (F32(nmax) / (top - minimum))
    best = error(scale, codes.astype(F32), minimum)
    for step in range(nstep + 1):
        trial = codes_at(np.full_like(top, F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)))
        level = trial.astype(F32)
        sum_l, sum_l2 = _seq_sum(weights * level), _seq_sum(weights * level * level)
        sum_xl = _seq_sum(weights * level * x)
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        positive = this_min > 0
        this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
        this_min = np.where(positive, F32(0), this_min)
        cur = error(this_scale, level, this_min)
        better = (det > 0) & (cur < best)
        codes = np.where(better[..., None], trial, codes)
        best, scale = np.where(better, cur, best), np.where(better, this_scale, scale)
        minimum = np.where(better, this_min, minimum)
    return np.where(flat, F32(0), scale), -minimum, np.where(flat[..., None], 0, codes)


def _q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_q3_quants`` with do_rmse: symmetric codes refined one weight at a time (5 sweeps), weighted by x^2.

    The sweep is sequential within a group (each change moves the sums the next weight reads), so it loops over
    the group's positions, all groups at once. Returns (scale, codes in [0, 2 nmax)).
    """
    peak = _signed_max(x)
    empty = np.abs(peak) < GROUP_MAX_EPS
    codes = _nearest(F32(-nmax) / np.where(empty, F32(1), peak)[..., None] * x, -nmax, nmax - 1)
    w = x * x
    level = codes.astype(F32)
    sumlx, suml2 = _seq_sum(w * x * level), _seq_sum(w * level * level)
    for _ in range(5):  # a sweep that changes nothing leaves the state as it was: the C loop's early exit
        for i in range(x.shape[-1]):
            xi, wi, li = x[..., i], w[..., i], codes[..., i].astype(F32)
            slx = sumlx - wi * xi * li
            sl2 = suml2 - wi * li * li
            new = _nearest(xi * sl2 / slx, -nmax, nmax - 1)
            nl = new.astype(F32)
            slx_new, sl2_new = slx + wi * xi * nl, sl2 + wi * nl * nl
            take = ((slx > 0) & (new != codes[..., i]) & (sl2_new > 0)
                    & (slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new))
            codes[..., i] = np.where(take, new, codes[..., i])
            sumlx, suml2 = np.where(take, slx_new, sumlx), np.where(take, sl2_new, suml2)
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(empty, F32(0), scale), np.where(empty[..., None], 0, codes + nmax)


def _requantize(x: np.ndarray, scale: np.ndarray, offset: np.ndarray, codes: np.ndarray, low: int, high: int,
                shift: int = 0) -> np.ndarray:
    """Codes recomputed against the stored (rounded) group scales, plus ``shift``; a group whose stored scale is
    zero keeps its ``codes`` from the group quantizer (the C loop skips it)."""
    fresh = _nearest((x + offset[..., None]) / scale[..., None], low, high) + shift
    return np.where((scale != 0)[..., None], fresh, codes).reshape(len(x), -1)


def _pack_k4_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and eight 6-bit mins [n, 8] as the 12 bytes of Q4_K / Q5_K (``get_scale_min_k4``)."""
    head = ls[:, :4] | (ls[:, 4:] >> 4) << 6
    mins = lm[:, :4] | (lm[:, 4:] >> 4) << 6
    tail = (ls[:, 4:] & 0xF) | (lm[:, 4:] & 0xF) << 4
    return np.concatenate([head, mins, tail], axis=1)


def _planes(codes: np.ndarray, shape: tuple[int, ...], bits: int) -> np.ndarray:
    """Interleave codes into bytes: ``codes.reshape(shape)`` ORed along axis -2, the k-th ``k * bits`` to the left."""
    parts = codes.reshape(shape)
    shifts = np.arange(parts.shape[-2]) * bits
    return np.bitwise_or.reduce(parts << shifts[:, None], axis=-2)


def _bytes(*fields: np.ndarray) -> np.ndarray:
    """A block's fields [n, k_i], in struct order, laid end to end as uint8 [n, sum k_i]."""
    return np.concatenate([field.astype(np.uint8) for field in fields], axis=1)


# ---- the legacy block encoders with an importance matrix (``quantize_row_q*_0_impl``)


def _emphasis(rows: np.ndarray, importance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows and each weight's error weight ``imatrix[j] * sqrt(sigma2 + x_j^2)``, sigma2 the row's mean x^2."""
    sigma2 = _seq_sum(rows * rows) / F32(rows.shape[1])
    return rows, importance.astype(F32)[None, :] * np.sqrt(sigma2[:, None] + rows * rows)


def _encode_q4_0_weighted(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``block_q4_0``: a float16 scale and 32 4-bit codes, low nibbles the first 16 weights."""
    scale, codes = _qx_quants(x, 8, weights)
    return _bytes(_half(scale)[0], codes[:, :16] | codes[:, 16:] << 4)


def _encode_q5_0_weighted(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``block_q5_0``: a float16 scale, the codes' fifth bits in a little-endian uint32, then their low nibbles."""
    scale, codes = _qx_quants(x, 16, weights)
    high = np.bitwise_or.reduce(((codes >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32), axis=1)
    low = codes & 0xF
    return _bytes(_half(scale)[0], high.astype("<u4")[:, None].view(np.uint8), low[:, :16] | low[:, 16:] << 4)


# ---- the K-quant block encoders: float32 super-blocks [n, 256] -> their bytes, in ggml-common.h's struct order


def _encode_q6_k(x: np.ndarray) -> np.ndarray:
    """``block_q6_K``: 16 groups of 16 with 6-bit symmetric codes and int8 group scales under one float16 scale."""
    n = len(x)
    groups = x.reshape(n, 16, 16)
    scales, codes = _qx_quants(groups, 32)
    top = _signed_max(scales)
    empty = np.abs(top) < GROUP_MAX_EPS  # llama.cpp writes an all-zero block
    iscale = F32(-128) / np.where(empty, F32(1), top)
    d_bytes, d = _half(F32(1) / iscale)
    group_scales = np.minimum(127, np.rint(iscale[:, None] * scales)).astype(np.int32)
    codes = _requantize(groups, d[:, None] * group_scales.astype(F32), np.zeros_like(scales), codes, -32, 31, 32)
    halves = codes.reshape(n, 2, 4, 32)
    low = halves & 0xF
    ql = np.concatenate([low[:, :, 0] | low[:, :, 2] << 4, low[:, :, 1] | low[:, :, 3] << 4], axis=2)
    qh = _planes(halves >> 4, (n, 2, 4, 32), 2)
    block = _bytes(ql.reshape(n, 128), qh.reshape(n, 64), group_scales.astype(np.int8).view(np.uint8), d_bytes)
    return np.where(empty[:, None], np.uint8(0), block)


def _scale_min_codes(x: np.ndarray, nmax: int, rmin: float, nstep: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K: 8 groups of 32, asymmetric codes, 6-bit group scales and mins under float16 d and dmin.

    Returns (codes [n, 256] in [0, nmax], the block's d, dmin and scale bytes [n, 16]).
    """
    n = len(x)
    groups = x.reshape(n, 8, 32)
    av_x = np.sqrt(_seq_sum(groups * groups) / F32(32))
    weights = av_x[..., None] + np.abs(groups)
    scales, mins, codes = _qkx2_quants(groups, weights, nmax, rmin, 0.1, nstep, use_mad=False)
    max_scale, max_min = np.maximum(scales.max(axis=1), F32(0)), np.maximum(mins.max(axis=1), F32(0))
    inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
    inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
    ls = np.minimum(63, _byte(inv_scale[:, None] * scales))
    lm = np.minimum(63, _byte(inv_min[:, None] * mins))
    d_bytes, d = _half(max_scale / F32(63))
    m_bytes, dmin = _half(max_min / F32(63))
    codes = _requantize(groups, d[:, None] * ls.astype(F32), dmin[:, None] * lm.astype(F32), codes, 0, nmax)
    return codes, _bytes(d_bytes, m_bytes, _pack_k4_scales(ls, lm))


def _encode_q5_k(x: np.ndarray) -> np.ndarray:
    """``block_q5_K``: 5-bit codes, low nibbles in ``qs`` and the fifth bits in ``qh``."""
    codes, head = _scale_min_codes(x, 31, -0.5, 15)
    n = len(x)
    qh = _planes((codes >> 4) & 1, (n, 8, 32), 1)
    qs = _planes(codes & 0xF, (n, 4, 2, 32), 4).reshape(n, 128)
    return _bytes(head, qh, qs)


def _encode_q4_k(x: np.ndarray) -> np.ndarray:
    """``block_q4_K``: 4-bit codes, two per byte (weights l and l + 32 of each 64)."""
    codes, head = _scale_min_codes(x, 15, -1.0, 20)
    return _bytes(head, _planes(codes, (len(x), 4, 2, 32), 4).reshape(len(x), 128))


def _encode_q3_k(x: np.ndarray) -> np.ndarray:
    """``block_q3_K``: 16 groups of 16, 3-bit symmetric codes (2 low bits + a high-bit mask), 6-bit group scales."""
    n = len(x)
    groups = x.reshape(n, 16, 16)
    scales, codes = _q3_quants(groups, 4)
    top = _signed_max(scales)
    has = top != 0
    iscale = F32(-32) / np.where(has, top, F32(1))
    levels = np.where(has[:, None], _nearest(iscale[:, None] * scales, -32, 31) + 32, 0)
    d_bytes, d = _half(np.where(has, F32(1) / iscale, F32(0)))
    low = levels & 0xF
    packed = np.concatenate([low[:, :8] | low[:, 8:] << 4, _planes(levels >> 4, (n, 4, 4), 2)], axis=1)
    codes = _requantize(groups, d[:, None] * (levels - 32).astype(F32), np.zeros_like(scales), codes, -4, 3, 4)
    hmask = _planes((codes > 3).astype(np.int32), (n, 8, 32), 1)
    qs = _planes(codes & 3, (n, 2, 4, 32), 2).reshape(n, 64)
    return _bytes(hmask, qs, packed, d_bytes)


def _encode_q2_k(x: np.ndarray) -> np.ndarray:
    """``block_q2_K``: 16 groups of 16, 2-bit asymmetric codes, 4-bit group scales and mins under d and dmin."""
    n = len(x)
    groups = x.reshape(n, 16, 16)
    scales, mins, codes = _qkx2_quants(groups, np.abs(groups), 3, -0.5, 0.1, 15, use_mad=True)
    max_scale, max_min = np.maximum(scales.max(axis=1), F32(0)), np.maximum(mins.max(axis=1), F32(0))
    has_scale, has_min = (max_scale > 0)[:, None], (max_min > 0)[:, None]
    packed = np.where(has_scale, _byte(F32(15) / max_scale[:, None] * scales), 0)
    packed = (packed | np.where(has_min, _byte(F32(15) / max_min[:, None] * mins), 0) << 4) & 0xFF
    d_bytes, d = _half(np.where(has_scale[:, 0], max_scale / F32(15), F32(0)))
    m_bytes, dmin = _half(np.where(has_min[:, 0], max_min / F32(15), F32(0)))
    codes = _requantize(groups, d[:, None] * (packed & 0xF).astype(F32), dmin[:, None] * (packed >> 4).astype(F32),
                        codes, 0, 3)
    qs = _planes(codes, (n, 2, 4, 32), 2).reshape(n, 64)
    return _bytes(packed, qs, d_bytes, m_bytes)


def _type(name: str, encoder: Encoder | None = None, weighted: WeightedEncoder | None = None) -> TensorType:
    """A type with its block geometry read from gguf's table."""
    qtype = GGMLQuantizationType[name]
    block, block_bytes = GGML_QUANT_SIZES[qtype]
    return TensorType(name, qtype, block, block_bytes, encoder, weighted)


#: every type this codec writes, from the most bits per weight to the fewest
TYPES: dict[str, TensorType] = {t.name: t for t in (
    _type("F16"), _type("BF16"), _type("Q8_0"), _type("Q6_K", _encode_q6_k), _type("Q5_1"),
    _type("Q5_K", _encode_q5_k), _type("Q5_0", weighted=_encode_q5_0_weighted), _type("Q4_1"),
    _type("Q4_K", _encode_q4_k), _type("Q4_0", weighted=_encode_q4_0_weighted), _type("Q3_K", _encode_q3_k),
    _type("Q2_K", _encode_q2_k),
)}
