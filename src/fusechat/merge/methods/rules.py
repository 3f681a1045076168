"""The methods' torch-free rules: option enums, tolerances, DARE's mask key, VaRM's weights from variations.

Shared by the torch functions of this package and the compiled kernels (`merge/fast/`), which must not import
torch (see `merge/dtypes.py`); one definition keeps both paths on the same rule.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

RESCALE_EPS = 1e-7  # a norm below this skips DARE/TIES's rescale (mergekit's tolerance)
UNIFORM_BELOW = 1e-6  # SCE: Σ mean(τ²) below this gives equal weights (mergekit's tolerance)
PARALLEL_DOT = 0.9995  # |cos| above this: straight interpolation (mergekit's threshold)
TINY_NORM = 1e-8  # vectors with a norm at or below this are not normalised


class Sparsify(StrEnum):
    NONE = "none"
    MAGNITUDE = "magnitude"  # TIES: keep the largest |δ|
    RANDOM = "random"  # DARE: keep a random subset


class Variation(StrEnum):
    SQUARED = "squared"  # mean(Δ²), the paper's
    ABSOLUTE = "absolute"  # mean(|Δ|)


class Granularity(StrEnum):
    MODEL = "model"
    LAYER = "layer"
    MODULE = "module"
    MATRIX = "matrix"
    ELEMENT = "element"


def tensor_key(seed: int, tensor_name: str, model_index: int) -> tuple[int, int]:
    """DARE's mask key of (seed, tensor name, model index): two 32-bit words of their sha256."""
    digest = hashlib.sha256(f"{seed}\0{tensor_name}\0{model_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:8], "little")


def keep_limit(density: float) -> int:
    """An entry is kept when its 32-bit draw is below this: probability `density` (to 2⁻³²)."""
    return min(1 << 32, int(density * 4294967296.0))


def linear_weights(job: Any) -> list[float]:
    """A linear merge's per-model weights; a zero sum cannot be normalised (both paths refuse it alike)."""
    weights = [p["weight"] for p in job.per_model]
    if job.shared["normalize"] and abs(sum(weights)) < 1e-12:
        raise ValueError(f"{job.name}: the weights sum to 0, cannot normalise; set normalize: false")
    return weights


def weights_from_variations(variations: Sequence[float]) -> list[float]:
    """VaRM: Wⱼ = vⱼ / Σₖ vₖ for n non-negative variations; uniform 1/n when they are all zero."""
    total = float(sum(variations))
    n = len(variations)
    if total <= 0:
        return [1.0 / n] * n
    return [float(v) / total for v in variations]


def coefficients(norm_a: float, norm_b: float, dot: float, t: float) -> tuple[float, float]:
    """SLERP's two coefficients from the norms and the (unnormalised) dot product of the flattened tensors."""
    norm_a = norm_a if norm_a > TINY_NORM else 1.0
    norm_b = norm_b if norm_b > TINY_NORM else 1.0
    cos = min(1.0, max(-1.0, dot / (norm_a * norm_b)))
    if abs(cos) > PARALLEL_DOT:
        return 1.0 - t, t
    theta = math.acos(cos)
    sin_theta = math.sin(theta)
    return math.sin((1.0 - t) * theta) / sin_theta, math.sin(t * theta) / sin_theta
