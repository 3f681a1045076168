"""Sparsifying a task vector before merging: keep the largest magnitudes (TIES) or a random subset (DARE).

Both keep a fraction `density` of a delta's entries; with `rescale` the kept entries are scaled so the delta's
L1 norm is unchanged (mergekit's rule; DARE's paper rescales by 1/density instead, which preserves the norm
only in expectation). Functions work in place on a delta the caller owns, to keep peak memory at one tensor.

DARE's mask is a counter-based draw: entry j of a tensor is kept when a 32-bit hash of (j, the tensor's key)
is below density · 2³², the key coming from (seed, tensor name, model index). Any entry's draw is computed on
its own, so the compiled kernels (`merge/fast/`) draw the same mask in parallel chunks, and a merge does not
depend on the order or the sharding of its tensors. (Before, masks were `torch.rand` streams from a seeded
generator; the same seed now gives a different, equally reproducible mask.)
"""

from __future__ import annotations

import torch

from fusechat.merge.methods.blocks import blocks, sum_abs
from fusechat.merge.methods.rules import RESCALE_EPS, keep_limit, tensor_key
from fusechat.merge.methods.select import keep_top_k_

__all__ = ["RESCALE_EPS", "element_hash", "keep_limit", "magnitude_prune_", "random_prune_", "tensor_key"]


def magnitude_prune_(delta: torch.Tensor, density: float, rescale: bool = False) -> torch.Tensor:
    """Zero all but the k = max(1, int(density·n)) largest |delta| entries, in place; returns `delta`.

    delta: (...) float. density in (0, 1]; 1 leaves `delta` untouched. Ties at the threshold keep the first
    entries in memory order (mergekit's sort leaves that order unspecified).
    """
    if density >= 1 or delta.numel() == 0:
        return delta
    k = max(1, int(density * delta.numel()))
    before = sum_abs(delta) if rescale else 0.0
    keep_top_k_(delta, k, [delta], by_magnitude=True)
    if rescale:
        _rescale_l1_(delta, before)
    return delta


def random_prune_(delta: torch.Tensor, density: float, key: tuple[int, int], rescale: bool = True) -> torch.Tensor:
    """Keep each entry with probability `density` (DARE), in place; returns `delta`.

    delta: (...) float; key: the tensor's mask key (`tensor_key`), so a seed reproduces the mask. With
    `rescale`, the kept entries are scaled to restore the L1 norm of `delta` (skipped when either norm is
    below 1e-7).
    """
    if density >= 1 or delta.numel() == 0:
        return delta
    before = sum_abs(delta) if rescale else 0.0
    flat = delta.reshape(-1)
    limit = keep_limit(density)
    for s in blocks(flat.numel()):
        keep = element_hash(torch.arange(s.start, s.stop, dtype=torch.int64), key) < limit
        flat[s].mul_(keep.to(delta.dtype))
    if rescale:
        _rescale_l1_(delta, before)
    return delta


def _rescale_l1_(delta: torch.Tensor, before: float) -> None:
    after = sum_abs(delta)
    if before >= RESCALE_EPS and after >= RESCALE_EPS:
        delta.mul_(before / after)


_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x · c mod 2³² for int64 x < 2³², without int64 overflow (the constant in two 16-bit halves)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def element_hash(index: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """Each flat index's 32-bit draw under `key` (int64 tensor in, int64 values in [0, 2³²) out)."""
    h = _mix32((index & _MASK32) ^ key[0])
    return _mix32(h ^ (index >> 32) ^ key[1])
