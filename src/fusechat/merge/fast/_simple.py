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
from fusechat.merge.methods.rules import Variation, coefficients


@njit(parallel=True, nogil=True, cache=True)
def _weighted_sum(xs, weights, divisor, first_mul, out):  # pragma: no cover - compiled
    """out = fma chain Σ wᵢxᵢ (from zero, or xs[0]·w₀ when `first_mul`), divided by `divisor`."""
    size = xs[0].size
    n = len(xs)
    for c in prange(-(-size // CHUNK)):
        buf = np.empty(TILE, dtype=np.float32)
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            m = t1 - t0
            x = xs[0][t0:t1]
            w = weights[0]
            if first_mul:
                for r in range(m):
                    buf[r] = load(x, r) * w
            else:
                for r in range(m):
                    buf[r] = fma(load(x, r), w, np.float32(0.0))
            for i in range(1, n):
                x = xs[i][t0:t1]
                w = weights[i]
                for r in range(m):
                    buf[r] = fma(load(x, r), w, buf[r])
            tile_out = out[t0:t1]
            for r in range(m):  # x / 1 is x exactly: no division asked, divisor 1
                store(tile_out, r, buf[r] / divisor)


@njit(parallel=True, nogil=True, cache=True)
def _pair_sums(a, b, sums):  # pragma: no cover - compiled
    """sums[c] = (Σ a², Σ b², Σ ab) over chunk c, float64."""
    size = a.size
    for c in prange(sums.shape[0]):
        saa = 0.0
        sbb = 0.0
        sab = 0.0
        ta = a[c * CHUNK : min(size, (c + 1) * CHUNK)]
        tb = b[c * CHUNK : min(size, (c + 1) * CHUNK)]
        for r in range(ta.size):
            x = np.float64(load(ta, r))
            y = np.float64(load(tb, r))
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
            x = xs[i][c * CHUNK : min(size, (c + 1) * CHUNK)]
            tile_base = base[c * CHUNK : min(size, (c + 1) * CHUNK)]
            s = 0.0
            if squared:
                for r in range(x.size):
                    d = np.float64(load(x, r) - load(tile_base, r))
                    s += d * d
            else:
                for r in range(x.size):
                    s += abs(np.float64(load(x, r) - load(tile_base, r)))
            sums[c, i] = s


def weighted_sum(xs: tuple, weights: Sequence[float], divisor: float | None, out: np.ndarray) -> None:
    """out = Σ wᵢxᵢ (as `linear` / `varm` compute it), divided by `divisor` when given."""
    w = np.array([float(v) for v in weights], dtype=np.float32)
    _weighted_sum(xs, w, np.float32(1.0 if divisor is None else divisor), False, out)


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
    _weighted_sum((a, b), np.array([coef_a, coef_b], dtype=np.float32), np.float32(1.0), True, out)
