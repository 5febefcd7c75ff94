"""Structured pruning of a sub-layer's inner width (ZipLM): which blocks of an output projection's input columns go.

Pure functions on tensors, no I/O, computed on their inputs' device. ``weight`` [rows, cols] is the projection that
reads the sub-layer's inner activations (``o_proj`` after attention, ``down_proj`` in an MLP); its input columns come
in ``cols // size`` structures of ``size`` consecutive columns (the heads of one KV group; one FFN channel). ``xtx``
is X^T X [cols, cols] of its calibration inputs. Removing a structure removes the rows that produce it in the input
projections too, so the sub-layer becomes physically narrower; only the output projection's remaining columns change
(OBS correction).

Both builders return a ``Pruned``: a keep order in which every level's kept set is a prefix (removal is greedy, hence
nested), and the output projection's weight at each requested kept count, its columns in keep order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paretopress.spaces.levels import inverse_hessian


@dataclass(frozen=True)
class Pruned:
    keep: list[int]  # structure indices, most important first: k kept structures are keep[:k]
    weights: dict[int, torch.Tensor]  # kept count -> output projection [rows, kept * size], columns in keep order


def columns(structures: list[int], size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Column indices of the given structures, in their order."""
    starts = torch.tensor(structures, dtype=torch.long, device=device).reshape(-1, 1) * size
    return (starts + torch.arange(size, device=device)).reshape(-1)


def structured_obs(weight: torch.Tensor, xtx: torch.Tensor, size: int, kept: list[int]) -> Pruned:
    """Remove structures one at a time, always the one whose removal least raises ||X (W - W')^T||^2, correcting
    the remaining columns after each removal (structured OBS, as ZipLM; 1% dampening of the Hessian).

    With S a structure's columns and H^-1 the inverse Hessian of the columns still present, removing S costs
    tr(W_S (H^-1_SS)^-1 W_S^T); the update is W -= W_S (H^-1_SS)^-1 H^-1_S: and H^-1 -= H^-1_:S (H^-1_SS)^-1 H^-1_S:.
    Snapshots are taken when ``kept`` counts are reached (counts of 0 and of every structure need no OBS). Removed
    columns are cut out of both matrices whenever they make up an eighth of them, so later steps touch less memory.
    """
    hinv, w = inverse_hessian(weight, xtx)
    w = w.double()
    count = w.shape[1] // size
    ids = torch.arange(count, device=w.device)  # the original structure of each block still in the matrices
    alive = torch.ones(count, dtype=torch.bool, device=w.device)
    removed: list[int] = []
    snapshots: dict[int, tuple[list[int], torch.Tensor]] = {}
    for target in sorted({k for k in kept if 0 < k < count}, reverse=True):
        while count - len(removed) > target:
            if 8 * int((~alive).sum()) >= len(alive):
                w, hinv, ids, alive = _compact(w, hinv, ids, alive, size)
            inverse = _block_inverses(hinv, size, alive)
            j = int(torch.argmin(_removal_errors(w, inverse, size).masked_fill(~alive, float("inf"))))
            cols_j = slice(j * size, (j + 1) * size)
            correction = inverse[j] @ hinv[cols_j, :]  # [size, cols]
            w.addmm_(w[:, cols_j].clone(), correction, alpha=-1)  # in place: one pass over each matrix
            hinv.addmm_(hinv[:, cols_j].clone(), correction, alpha=-1)
            w[:, cols_j] = 0
            alive[j] = False
            removed.append(int(ids[j]))
        local = alive.nonzero().reshape(-1).tolist()
        snapshots[target] = ([int(ids[i]) for i in local], w[:, columns(local, size, w.device)].float())
    keep = [int(i) for i in ids[alive]] + removed[::-1]
    weights = {}
    for k, (present, snapshot) in snapshots.items():
        where = {structure: position for position, structure in enumerate(present)}
        weights[k] = snapshot[:, columns([where[s] for s in keep[:k]], size, w.device)].contiguous()
    return Pruned(keep, weights)


def _compact(w: torch.Tensor, hinv: torch.Tensor, ids: torch.Tensor, alive: torch.Tensor,
             size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The matrices without the columns (and inverse-Hessian rows) of removed structures."""
    cols = columns(alive.nonzero().reshape(-1).tolist(), size, w.device)
    return w[:, cols], hinv[cols][:, cols], ids[alive], torch.ones(int(alive.sum()), dtype=torch.bool, device=w.device)


def magnitude(weight: torch.Tensor, size: int, kept: list[int]) -> Pruned:
    """Keep the structures whose output-projection columns have the largest norm; no correction."""
    count = weight.shape[1] // size
    norms = weight.reshape(weight.shape[0], count, size).square().sum((0, 2))
    keep = [int(i) for i in torch.argsort(norms, descending=True, stable=True)]
    return Pruned(keep, {k: weight[:, columns(keep[:k], size, weight.device)].float().contiguous()
                         for k in sorted(set(kept)) if 0 < k < count})


def _block_inverses(hinv: torch.Tensor, size: int, alive: torch.Tensor) -> torch.Tensor:
    """(H^-1_SS)^-1 of every structure S [count, size, size]; identity for removed ones (their block is zero)."""
    count = hinv.shape[0] // size
    if size == 1:
        return (1 / hinv.diagonal().masked_fill(~alive, 1))[:, None, None]
    blocks = torch.stack([hinv[i * size:(i + 1) * size, i * size:(i + 1) * size] for i in range(count)])
    blocks[~alive] = torch.eye(size, dtype=blocks.dtype, device=blocks.device)
    # Cholesky, not torch.linalg.inv: the blocks are positive definite, and batched LU failed inside MKL (torch 2.13,
    # 2 threads) on real inverse Hessians
    return torch.cholesky_inverse(torch.linalg.cholesky(blocks))


def _removal_errors(w: torch.Tensor, inverse: torch.Tensor, size: int) -> torch.Tensor:
    """tr(W_S (H^-1_SS)^-1 W_S^T) of every structure [count]."""
    if size == 1:
        return w.square().sum(0) * inverse[:, 0, 0]
    ws = w.reshape(w.shape[0], -1, size).transpose(0, 1)  # [count, rows, size]
    return ((ws @ inverse) * ws).sum((1, 2))
