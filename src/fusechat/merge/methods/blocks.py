"""Elementwise work in cache-sized blocks, so a large tensor's temporaries are a block, not a tensor.

The merge methods run several elementwise passes (masks, sign election, sums) over each tensor. Done on whole
tensors, every pass streams the full tensor through memory and allocates full-size temporaries; done block by
block, the passes reuse a few megabytes that stay in cache, and the temporaries no longer set peak memory.
Results are identical: every operation is elementwise, and reductions accumulate in float64.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

BLOCK = 1 << 20  # elements: 4 MiB of float32


def blocks(n: int, size: int = BLOCK) -> Iterator[slice]:
    """Consecutive slices covering range(n)."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def sum_abs(x: torch.Tensor) -> float:
    """Σ |x| over all entries, accumulated in float64, without a full-size temporary."""
    flat = x.reshape(-1)
    return float(sum(flat[s].abs().sum(dtype=torch.float64) for s in blocks(flat.numel())))


def sum_squares(x: torch.Tensor) -> float:
    """Σ x² over all entries, accumulated in float64, without a full-size temporary."""
    flat = x.reshape(-1)
    total = 0.0
    for s in blocks(flat.numel()):  # widened first: a float32 dot would accumulate in float32
        b = flat[s].double()
        total += float(torch.dot(b, b))
    return total


def dot64(a: torch.Tensor, b: torch.Tensor) -> float:
    """Σ aᵢbᵢ of two flat tensors, accumulated in float64, one block at a time."""
    return float(sum(torch.dot(a[s].double(), b[s].double()) for s in blocks(a.numel())))
