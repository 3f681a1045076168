"""VaRM, the paper's merge: weight each target, per parameter group, by how far it moved from the pivot.

For targets j fine-tuned from one pivot P and a group m of parameters (the whole model, a layer, a module, a
matrix or a single element), Δⱼ = θⱼ − θ_P, Wⱼ = var(Δⱼ) / Σₖ var(Δₖ) with var the mean squared (or absolute)
change over the group, and θ = Σⱼ Wⱼ θⱼ. When no target moved in a group, the weights are uniform. The
authors' released script computed its analysis target-against-target and so always fell back to uniform
weights; this is the formula of the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fusechat.merge.methods.blocks import sum_abs, sum_squares
from fusechat.merge.methods.rules import Granularity, Variation, weights_from_variations

__all__ = [
    "Granularity",
    "Variation",
    "varm",
    "varm_element",
    "varm_matrix",
    "variation_sum",
    "weights_from_variations",
]


def variation_sum(delta: torch.Tensor, measure: Variation) -> float:
    """Σ Δ² (or Σ |Δ|) over all entries of `delta` (any shape), accumulated in float64."""
    return sum_squares(delta) if measure is Variation.SQUARED else sum_abs(delta)


def varm(targets: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """θ = Σⱼ Wⱼ θⱼ. targets: n of (...); weights: n floats (summing to 1). Returns (...), targets' dtype."""
    out = torch.zeros_like(targets[0])
    for x, w in zip(targets, weights, strict=True):
        out.add_(x, alpha=float(w))
    return out


def varm_matrix(
    pivot: torch.Tensor, targets: Sequence[torch.Tensor], measure: Variation = Variation.SQUARED
) -> tuple[torch.Tensor, list[float]]:
    """VaRM with one weight per target for this whole tensor. Returns (merged (...), the n weights)."""
    weights = weights_from_variations([variation_sum(x - pivot, measure) for x in targets])
    return varm(targets, weights), weights


def varm_element(
    pivot: torch.Tensor, targets: Sequence[torch.Tensor], measure: Variation = Variation.SQUARED
) -> tuple[torch.Tensor, list[float]]:
    """VaRM with one weight per target and entry: Wⱼ = vⱼ / Σₖ vₖ elementwise, uniform where Σₖ vₖ = 0.

    pivot: (...); targets: n of (...). Returns (merged (...), each target's mean weight over the entries).
    """
    n = len(targets)
    variations = []
    for x in targets:
        delta = x - pivot
        variations.append(delta.square_() if measure is Variation.SQUARED else delta.abs_())
    total = variations[0].clone()
    for v in variations[1:]:
        total.add_(v)
    still = total == 0
    total.masked_fill_(still, 1.0)
    out = torch.zeros_like(pivot)
    mean_weights = []
    for x, v in zip(targets, variations, strict=True):
        w = v.div_(total).masked_fill_(still, 1.0 / n)
        mean_weights.append(float(w.mean(dtype=torch.float64)))
        out.addcmul_(w, x)
    return out, mean_weights
