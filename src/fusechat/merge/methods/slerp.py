"""Spherical linear interpolation between a base tensor and one other, treating each tensor as one vector.

Interpolating along the great circle keeps the norm of the result close to the inputs' norms, where a
straight average of two dissimilar weight vectors shrinks it. Nearly parallel vectors fall back to a straight
interpolation, where the spherical formula is numerically unstable.
"""

from __future__ import annotations

import torch

from fusechat.merge.methods.blocks import dot64
from fusechat.merge.methods.rules import coefficients


def slerp(base: torch.Tensor, other: torch.Tensor, t: float) -> torch.Tensor:
    """Interpolate from `base` (t = 0) to `other` (t = 1) along the arc between the two flattened tensors.

    base, other: (...) of one shape, float32 or float64; t: float. Returns (...) in the inputs' dtype:
    sin((1−t)θ)/sin θ · base + sin(tθ)/sin θ · other, θ the angle between them, computed on the unnormalised
    tensors; when |cos θ| > 0.9995, (1−t)·base + t·other.
    """
    a = base.reshape(-1)
    b = other.reshape(-1)
    if a.numel() == 0:
        return base.clone()
    norm_a = float(torch.linalg.vector_norm(a, dtype=torch.float64))
    norm_b = float(torch.linalg.vector_norm(b, dtype=torch.float64))
    coef_a, coef_b = coefficients(norm_a, norm_b, dot64(a, b), t)
    out = base.mul(coef_a)
    out.add_(other, alpha=coef_b)
    return out
