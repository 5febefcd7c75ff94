"""Numeric primitives that turn one linear layer's weight [rows, cols] into compression levels.

Pure functions on tensors, no I/O, computed on their inputs' device (a GPU's or the CPU). ``xtx`` is the
calibration statistic X^T X [cols, cols] of the layer's inputs (X: [tokens, cols]); Wanda uses its diagonal
(||X_j||^2), SparseGPT and GPTQ its damped inverse (the OBS Hessian). Levels of one call are computed together,
batched along a leading dimension, so one pass over the columns serves every level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BLOCK = 128  # columns per lazy-update block (SparseGPT / GPTQ)
DAMP = 0.01  # dampening: fraction of the mean Hessian diagonal added to the diagonal
NEVER = 255  # removal level of a weight that no level removes


def removal_levels(position: torch.Tensor, removed: list[int]) -> torch.Tensor:
    """uint8 map: the first level at which each weight is removed, from its position in the removal order.

    Level ``l`` removes the weights at positions ``< removed[l]`` (``removed`` is increasing), so one byte per weight
    stores every nested mask at once: the order cut at the level boundaries.
    """
    bounds = torch.tensor(removed, dtype=torch.long, device=position.device)
    level = torch.searchsorted(bounds, position.reshape(-1), right=True).reshape(position.shape)
    return torch.where(level >= len(removed), NEVER, level).to(torch.uint8)


def magnitude_positions(weight: torch.Tensor) -> torch.Tensor:
    """Position of every weight in the layer-wide order of increasing |W|."""
    order = torch.argsort(weight.abs().reshape(-1), stable=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device)
    return position.reshape(weight.shape)


def wanda_positions(weight: torch.Tensor, xtx: torch.Tensor) -> torch.Tensor:
    """Position in Wanda's order: |W_ij| * ||X_j|| compared within each output row.

    Rows take turns (the least important weight of every row, then the second, ...), so any prefix of the order
    removes the same number of weights from every row, give or take one: Wanda's per-output comparison group.
    """
    score = weight.abs() * xtx.diagonal().clamp(min=0).sqrt()[None, :]
    order = torch.argsort(score, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(weight.shape[1], device=order.device).expand_as(order).contiguous())
    return rank * weight.shape[0] + torch.arange(weight.shape[0], device=order.device)[:, None]


def inverse_hessian(weight: torch.Tensor, xtx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The damped inverse Hessian (float64), and the weight with dead input columns (never active) zeroed."""
    h = xtx.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    weight = weight.clone()
    weight[..., dead] = 0
    h += DAMP * h.diagonal().mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    return torch.cholesky_inverse(torch.linalg.cholesky(h)), weight


def _inverse_hessian_factor(weight: torch.Tensor, xtx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor of the damped inverse Hessian, and the weight with dead input columns zeroed."""
    inverse, weight = inverse_hessian(weight, xtx)
    return torch.linalg.cholesky(inverse, upper=True).float(), weight


def _split(total: int, widths: list[int]) -> list[int]:
    """Split ``total`` over blocks proportionally to their widths, exactly (largest remainder)."""
    share = np.array(widths, dtype=np.float64) * total / sum(widths)
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(counts - share, kind="stable")[: total - counts.sum()]] += 1
    return counts.tolist()


def sparsegpt(weight: torch.Tensor, xtx: torch.Tensor, removed: list[int]) -> torch.Tensor:
    """SparseGPT at every level at once: [levels, rows, cols], level ``l`` with exactly ``removed[l]`` zeros.

    Within each block of 128 columns the weights with the smallest w^2 / [H^-1]_jj^2 are removed (each block's
    share of the level's count, so the total is exact), and the OBS update spreads their error over the columns
    not yet processed.
    """
    factor, weight = _inverse_hessian_factor(weight, xtx)
    work = weight.float().expand(len(removed), *weight.shape).clone()
    cols = weight.shape[1]
    starts = list(range(0, cols, BLOCK))
    widths = [min(BLOCK, cols - s) for s in starts]
    shares = [_split(k, widths) for k in removed]
    for b, (i1, width) in enumerate(zip(starts, widths, strict=True)):
        i2 = i1 + width
        block = work[:, :, i1:i2].clone()
        hinv = factor[i1:i2, i1:i2]
        saliency = (block**2 / hinv.diagonal()[None, None, :] ** 2).reshape(len(removed), -1)
        mask = torch.zeros_like(saliency, dtype=torch.bool)
        for level, share in enumerate(shares):
            mask[level, torch.topk(saliency[level], share[b], largest=False).indices] = True
        mask = mask.reshape(block.shape)
        errors = torch.zeros_like(block)
        for i in range(width):
            column = block[:, :, i]
            pruned = column.masked_fill(mask[:, :, i], 0)
            error = (column - pruned) / hinv[i, i]
            block[:, :, i:] -= error[:, :, None] * hinv[i, i:][None, None, :]
            block[:, :, i] = pruned
            errors[:, :, i] = error
        work[:, :, i1:i2] = block
        work[:, :, i2:] -= errors @ factor[i1:i2, i2:]
    return work


def _group_params(weight: torch.Tensor, maxq: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale (rounded to float16, as stored) and integer zero point of a column group.

    ``weight`` [..., rows, width]; returns scale and zero [..., rows]. The range always includes 0. Symmetric (as
    GPTQ's reference quantizer): the range is +-max|w| and the zero point the middle code, the same for every group,
    so a runtime stores codes as signed integers and no zero point at all.
    """
    if symmetric:
        scale = (2 * weight.abs().amax(dim=-1) / maxq).half().float()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, torch.round((maxq + 1) / 2).expand_as(scale)
    low = weight.amin(dim=-1).clamp(max=0)
    high = weight.amax(dim=-1).clamp(min=0)
    scale = ((high - low) / maxq).half().float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.minimum(torch.round(-low / scale).clamp(min=0), maxq)
    return scale, zero


def _quantize(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: torch.Tensor) -> torch.Tensor:
    """Integer codes in [0, maxq] of ``weight`` [..., rows, width] (scale, zero [..., rows]; maxq [..., 1])."""
    return torch.minimum((torch.round(weight / scale[..., None]) + zero[..., None]).clamp(min=0), maxq[..., None])


@dataclass(frozen=True)
class QuantizedWeight:
    """One linear's group-wise integer form: weight = (codes - zero) * scale, a group being ``group_size`` columns.

    codes [rows, cols] uint8 below 2**bits; scale (float16) and zero (uint8) [rows, groups]."""

    bits: int
    group_size: int
    symmetric: bool
    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor


class Quantized:
    """Integer codes [levels, rows, cols], float16 scales and integer zero points [levels, rows, groups]."""

    def __init__(self, levels: int, rows: int, cols: int, group_size: int, device: torch.device) -> None:
        groups = -(-cols // group_size)
        self.codes = torch.zeros(levels, rows, cols, dtype=torch.uint8, device=device)
        self.scale = torch.zeros(levels, rows, groups, dtype=torch.float16, device=device)
        self.zero = torch.zeros(levels, rows, groups, dtype=torch.uint8, device=device)


def _max_codes(bits: list[int], device: torch.device) -> torch.Tensor:
    """The largest code of each bit-width [levels, 1]."""
    return torch.tensor([2**b - 1 for b in bits], dtype=torch.float32, device=device)[:, None]


def rtn(weight: torch.Tensor, bits: list[int], group_size: int, symmetric: bool = False) -> Quantized:
    """Round-to-nearest group-wise quantization at every bit-width at once."""
    maxq = _max_codes(bits, weight.device)
    out = Quantized(len(bits), *weight.shape, group_size, weight.device)
    for g, start in enumerate(range(0, weight.shape[1], group_size)):
        group = weight[None, :, start : start + group_size].float()
        scale, zero = _group_params(group.expand(len(bits), -1, -1), maxq, symmetric)
        out.codes[:, :, start : start + group_size] = _quantize(group, scale, zero, maxq).to(torch.uint8)
        out.scale[:, :, g], out.zero[:, :, g] = scale.half(), zero.to(torch.uint8)
    return out


def gptq(weight: torch.Tensor, xtx: torch.Tensor, bits: list[int], group_size: int,
         symmetric: bool = False) -> Quantized:
    """GPTQ at every bit-width at once: columns quantized in order, each one's error corrected by the OBS update.

    A group's scale and zero point are fixed when the search reaches its first column, from the (already updated)
    weights of the group, as in the reference implementation without activation order.
    """
    factor, weight = _inverse_hessian_factor(weight, xtx)
    maxq = _max_codes(bits, weight.device)
    rows, cols = weight.shape
    work = weight.float().expand(len(bits), rows, cols).clone()
    out = Quantized(len(bits), rows, cols, group_size, weight.device)
    scale = zero = None
    for i1 in range(0, cols, BLOCK):
        i2 = min(i1 + BLOCK, cols)
        block = work[:, :, i1:i2].clone()
        hinv = factor[i1:i2, i1:i2]
        errors = torch.zeros_like(block)
        for i in range(i2 - i1):
            column_index = i1 + i
            if column_index % group_size == 0:
                end = min(column_index + group_size, cols)
                current = torch.cat([block[:, :, i:], work[:, :, i2:end]], dim=2)[:, :, : end - column_index]
                scale, zero = _group_params(current, maxq, symmetric)
                out.scale[:, :, column_index // group_size] = scale.half()
                out.zero[:, :, column_index // group_size] = zero.to(torch.uint8)
            column = block[:, :, i]
            codes = _quantize(column[..., None], scale, zero, maxq)[..., 0]
            out.codes[:, :, column_index] = codes.to(torch.uint8)
            error = (column - scale * (codes - zero)) / hinv[i, i]
            block[:, :, i:] -= error[:, :, None] * hinv[i, i:][None, None, :]
            errors[:, :, i] = error
        work[:, :, i2:] -= errors @ factor[i1:i2, i2:]
    return out


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    """float32 weights [rows, cols] from codes [rows, cols] and per-group scale / zero [rows, groups]."""
    cols = codes.shape[-1]
    expand = torch.arange(cols, device=codes.device) // group_size
    return (codes.float() - zero.float()[:, expand]) * scale.float()[:, expand]


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack uint8 codes < 2**bits into a flat uint8 tensor of ceil(n * bits / 8) bytes, on the CPU."""
    flat = codes.reshape(-1).cpu().numpy()
    planes = np.unpackbits(flat[:, None], axis=1)[:, 8 - bits :]
    return torch.from_numpy(np.packbits(planes.reshape(-1)))


def unpack_bits(packed: torch.Tensor, bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of ``pack_bits``: uint8 codes of the given shape."""
    count = int(np.prod(shape))
    planes = np.unpackbits(packed.numpy())[: count * bits].reshape(count, bits)
    full = np.concatenate([np.zeros((count, 8 - bits), dtype=np.uint8), planes], axis=1)
    return torch.from_numpy(np.packbits(full, axis=1).reshape(shape))
