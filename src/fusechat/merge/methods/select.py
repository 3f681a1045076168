"""Exact top-k masks for TIES and SCE on the torch path, ties at the threshold broken by position.

The mask always keeps exactly k elements: those above the k-th largest value, then those equal to it first in
memory order, so it is deterministic. This is the reference the compiled selection (`fast/_select.py`, a radix
select over the float bits) is tested equal to, so it finds the threshold the plain way, with `torch.kthvalue`
(linear time, no sort); it runs only where the kernels do not (float64 data, `--mergekit-arithmetic`).
"""

from __future__ import annotations

import torch

from fusechat.merge.methods.blocks import blocks


def kth_largest(values: torch.Tensor, k: int, signed: bool = False) -> tuple[float, int, int]:
    """The k-th largest of the magnitudes |values| (1-D float32), with how many are above and equal to it.

    values: (n,) NaN-free, all >= 0 unless `signed` (then their absolute values are ranked). 1 <= k <= n.
    Returns (threshold, number strictly greater, number equal to it).
    """
    n = values.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} outside [1, {n}]")
    magnitudes = values.abs() if signed else values
    threshold = torch.kthvalue(magnitudes, n - k + 1).values
    n_greater = int(torch.count_nonzero(magnitudes > threshold))
    n_equal = int(torch.count_nonzero(magnitudes == threshold))
    return float(threshold), n_greater, n_equal


def topk_mask(scores: torch.Tensor, k: int, by_magnitude: bool = False) -> torch.Tensor:
    """A boolean mask of the k largest entries of `scores` (|scores| if `by_magnitude`), ties by position.

    scores: any shape, float32 (>= 0 unless by_magnitude). Returns a bool tensor of the same shape with
    exactly k True entries.
    """
    n = scores.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    flat = scores.reshape(-1)
    if flat.dtype != torch.float32:
        flat = flat.float()
    threshold, n_greater, n_equal = kth_largest(flat, k, signed=by_magnitude)
    mask = (flat.abs() if by_magnitude else flat) >= threshold
    surplus = n_equal - (k - n_greater)
    if surplus > 0:  # more ties at the threshold than places left: keep the first ones
        tied = torch.nonzero((flat.abs() if by_magnitude else flat) == threshold).squeeze(1)
        mask[tied[tied.numel() - surplus :]] = False
    return mask.view(scores.shape)


def keep_top_k_(scores: torch.Tensor, k: int, targets: list[torch.Tensor], by_magnitude: bool = False) -> None:
    """Zero, in place in every `targets` tensor, the entries outside the k largest of `scores`.

    scores: (...) float32 (>= 0 unless by_magnitude, then |scores| ranks); targets: tensors of the same shape
    (scores itself may be one). Same selection as `topk_mask`, applied block by block without a full mask.
    """
    flat = scores.reshape(-1)
    if flat.dtype != torch.float32:
        flat = flat.float()
    n = flat.numel()
    if k >= n:
        return
    outs = [t.reshape(-1) for t in targets]
    if k <= 0:
        for t in outs:
            t.zero_()
        return
    threshold, n_greater, n_equal = kth_largest(flat, k, signed=by_magnitude)
    surplus = n_equal - (k - n_greater)
    drop = None
    if surplus > 0:  # ties at the threshold beyond k: the last ones in memory order are dropped
        tied = [torch.nonzero(_score(flat[s], by_magnitude) == threshold).squeeze(1) + s.start for s in blocks(n)]
        tied_all = torch.cat(tied)
        drop = tied_all[tied_all.numel() - surplus :]
    for s in blocks(n):
        keep = (_score(flat[s], by_magnitude) >= threshold).to(outs[0].dtype)
        for t in outs:
            t[s].mul_(keep)
    if drop is not None:
        for t in outs:
            t[drop] = 0


def _score(block: torch.Tensor, by_magnitude: bool) -> torch.Tensor:
    return block.abs() if by_magnitude else block
