"""Sparsifying a task vector before merging: keep the largest magnitudes (TIES) or a random subset (DARE).

Both keep a fraction `density` of a delta's entries; with `rescale` the kept entries are scaled so the delta's
L1 norm is unchanged (mergekit's rule; DARE's paper rescales by 1/density instead, which preserves the norm
only in expectation). Functions work in place on a delta the caller owns, to keep peak memory at one tensor.
"""

from __future__ import annotations

import hashlib

import torch

from fusechat.merge.methods.blocks import blocks, sum_abs
from fusechat.merge.methods.select import keep_top_k_

RESCALE_EPS = 1e-7  # a norm below this skips the rescale (mergekit's tolerance)


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


def random_prune_(
    delta: torch.Tensor, density: float, generator: torch.Generator, rescale: bool = True
) -> torch.Tensor:
    """Keep each entry with probability `density` (DARE), in place; returns `delta`.

    delta: (...) float; generator: the source of the mask, so a seed reproduces it. With `rescale`, the kept
    entries are scaled to restore the L1 norm of `delta` (skipped when either norm is below 1e-7).
    """
    if density >= 1 or delta.numel() == 0:
        return delta
    before = sum_abs(delta) if rescale else 0.0
    flat = delta.reshape(-1)
    for s in blocks(flat.numel()):  # the mask is drawn block by block from one generator: reproducible
        keep = torch.rand(s.stop - s.start, generator=generator, dtype=torch.float32) < density
        flat[s].mul_(keep.to(delta.dtype))
    if rescale:
        _rescale_l1_(delta, before)
    return delta


def _rescale_l1_(delta: torch.Tensor, before: float) -> None:
    after = sum_abs(delta)
    if before >= RESCALE_EPS and after >= RESCALE_EPS:
        delta.mul_(before / after)


def tensor_generator(seed: int, tensor_name: str, model_index: int) -> torch.Generator:
    """A generator seeded from (seed, tensor name, model index): masks do not depend on processing order."""
    digest = hashlib.sha256(f"{seed}\0{tensor_name}\0{model_index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
