"""Compiled kernels of the weighted-sum methods (linear, VaRM, SLERP) and the reductions they need first.

A weighted sum is torch's `out.add_(x, alpha=w)` chain from zero, i.e. one fused multiply-add per input and
entry, then an optional division; SLERP needs the two norms and the dot product (float64 sums per chunk)
before its two coefficients are known; VaRM needs each target's summed variation from the pivot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit, prange

from fusechat.merge.fast._prims import fma, load, store
from fusechat.merge.fast._select import CHUNK, TILE, n_chunks
from fusechat.merge.methods.slerp import coefficients
from fusechat.merge.methods.varm import Variation


@njit(parallel=True, nogil=True, cache=True)
def _weighted_sum(xs, weights, divide, divisor, first_mul, out):  # pragma: no cover - compiled
    """out = fma chain Σ wᵢxᵢ (from zero, or xs[0]·w₀ when `first_mul`), then / divisor when `divide`."""
    size = xs[0].size
    n = len(xs)
    for c in prange(-(-size // CHUNK)):
        buf = np.empty(TILE, dtype=np.float32)
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            x = xs[0]
            w = weights[0]
            if first_mul:
                for j in range(t0, t1):
                    buf[j - t0] = load(x, j) * w
            else:
                for j in range(t0, t1):
                    buf[j - t0] = fma(load(x, j), w, np.float32(0.0))
            for i in range(1, n):
                x = xs[i]
                w = weights[i]
                for j in range(t0, t1):
                    buf[j - t0] = fma(load(x, j), w, buf[j - t0])
            for j in range(t0, t1):
                v = buf[j - t0]
                store(out, j, v / divisor if divide else v)


@njit(parallel=True, nogil=True, cache=True)
def _pair_sums(a, b, sums):  # pragma: no cover - compiled
    """sums[c] = (Σ a², Σ b², Σ ab) over chunk c, float64."""
    size = a.size
    for c in prange(sums.shape[0]):
        saa = 0.0
        sbb = 0.0
        sab = 0.0
        for j in range(c * CHUNK, min(size, (c + 1) * CHUNK)):
            x = np.float64(load(a, j))
            y = np.float64(load(b, j))
            saa += x * x
            sbb += y * y
            sab += x * y
        sums[c, 0] = saa
        sums[c, 1] = sbb
        sums[c, 2] = sab


@njit(parallel=True, nogil=True, cache=True)
def _delta_sums(base, xs, squared, sums):  # pragma: no cover - compiled
    """sums[c, i] = Σ (xᵢ − base)² (or Σ |xᵢ − base|) over chunk c, the difference in float32, sums float64."""
    size = base.size
    for c in prange(sums.shape[0]):
        for i in range(len(xs)):
            x = xs[i]
            s = 0.0
            for j in range(c * CHUNK, min(size, (c + 1) * CHUNK)):
                d = np.float64(load(x, j) - load(base, j))
                s += d * d if squared else abs(d)
            sums[c, i] = s


def weighted_sum(xs: tuple, weights: Sequence[float], divisor: float | None, out: np.ndarray) -> None:
    """out = Σ wᵢxᵢ (as `linear` / `varm` compute it), divided by `divisor` when given."""
    w = np.array([float(v) for v in weights], dtype=np.float32)
    _weighted_sum(xs, w, divisor is not None, np.float32(divisor or 1.0), False, out)


def variation_sums(base: np.ndarray, xs: tuple, measure: Variation) -> list[float]:
    """Each target's Σ Δ² (or Σ |Δ|) from the pivot, as `varm.variation_sum` computes it."""
    sums = np.zeros((n_chunks(base.size), len(xs)))
    _delta_sums(base, xs, measure is Variation.SQUARED, sums)
    return [float(s) for s in sums.sum(axis=0)]


def slerp(a: np.ndarray, b: np.ndarray, t: float, out: np.ndarray) -> None:
    """SLERP from a (t = 0) to b (t = 1), the coefficients as `methods/slerp.py` computes them."""
    if a.size == 0:
        return
    sums = np.zeros((n_chunks(a.size), 3))
    _pair_sums(a, b, sums)
    saa, sbb, sab = (float(v) for v in sums.sum(axis=0))
    coef_a, coef_b = coefficients(math.sqrt(saa), math.sqrt(sbb), sab, t)
    _weighted_sum((a, b), np.array([coef_a, coef_b], dtype=np.float32), False, np.float32(1.0), True, out)
