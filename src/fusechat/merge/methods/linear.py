"""Linear merging: a weighted average of the inputs (model soups), the simplest baseline of the paper."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def linear(tensors: Sequence[torch.Tensor], weights: Sequence[float], normalize: bool = True) -> torch.Tensor:
    """out = Σᵢ wᵢ xᵢ, divided by Σᵢ wᵢ when `normalize`.

    tensors: n tensors of one shape (...), floating point; weights: n floats. Returns (...), inputs' dtype.
    The accumulation order (zero, then each term, then the division) is mergekit's, so fp32 results agree.
    """
    if len(tensors) != len(weights):
        raise ValueError(f"{len(tensors)} tensors but {len(weights)} weights")
    out = torch.zeros_like(tensors[0])
    for x, w in zip(tensors, weights, strict=True):
        out.add_(x, alpha=float(w))
    if normalize:
        out.div_(float(sum(weights)))
    return out
