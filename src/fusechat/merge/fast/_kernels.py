"""The compiled elementwise passes that produce each method's output tensor in one sweep over the inputs.

Each kernel reads the inputs in their stored form (bf16 bits or float32), computes in float32 with the same
operations in the same order as the torch function of `methods/` (so results are equal bit for bit), and
writes the output in its final dtype (bf16 rounded to nearest even, or float32) straight into the buffer the
writer will write. Work is split in fixed chunks run in parallel; inside a chunk, tiles of a few thousand
entries of every input are combined while they sit in cache. Reductions accumulate in float64 per chunk.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fusechat.merge.fast._prims import ABS_MASK, element_hash, f32_bits, fma, load, store
from fusechat.merge.fast._select import CHUNK, TILE

ONE = np.float32(1.0)
ZERO = np.float32(0.0)

SPARSE_NONE, SPARSE_MAGNITUDE, SPARSE_RANDOM = 0, 1, 2


@njit(parallel=True, nogil=True, cache=True)
def gta(
    base, xs, sparsify, active, thresholds, quotas, keys, limits, scales, weights, elect, normalize, total, lam, out
):  # pragma: no cover - compiled
    """base + λ·combine(wᵢ·sparsify(xᵢ − base)) as `task_arithmetic` computes it (TA, TIES, DARE)."""
    size = base.size
    n = len(xs)
    nchunks = -(-size // CHUNK)
    for c in prange(nchunks):
        buf = np.empty((n, TILE), dtype=np.float32)
        left = np.empty(n, dtype=np.int64)
        for i in range(n):
            left[i] = quotas[i, c]
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            for i in range(n):
                x = xs[i]
                w = weights[i]
                scale = scales[i]
                on = active[i]
                thr = thresholds[i]
                k0, k1, limit = keys[i, 0], keys[i, 1], limits[i]
                q = left[i]
                for j in range(t0, t1):
                    d = load(x, j) - load(base, j)
                    if on:
                        if sparsify == SPARSE_MAGNITUDE:
                            a = f32_bits(d) & ABS_MASK
                            keep = a > thr or (a == thr and q > 0)
                            if a == thr:
                                q -= 1
                        else:
                            keep = element_hash(j, k0, k1) < limit
                        d = d * (ONE if keep else ZERO)
                        d = d * scale
                    buf[i, j - t0] = d * w
                left[i] = q
            for j in range(t0, t1):
                r = j - t0
                if elect:
                    s = buf[0, r]
                    for i in range(1, n):
                        s = s + buf[i, r]
                    positive = s >= ZERO
                    acc = ZERO
                    div = ZERO
                    for i in range(n):
                        p = buf[i, r]
                        kf = ONE if (p != ZERO and (p > ZERO) == positive) else ZERO
                        p = p * kf
                        acc = p if i == 0 else acc + p
                        div = kf * weights[i] if i == 0 else fma(kf, weights[i], div)
                    if normalize:
                        if div == ZERO:
                            div = div + ONE
                        acc = acc / div
                else:
                    acc = buf[0, r]
                    for i in range(1, n):
                        acc = acc + buf[i, r]
                    if normalize:
                        acc = acc / total
                if lam != ONE:
                    acc = acc * lam
                store(out, j, acc + load(base, j))


@njit(inline="always")
def _variance(buf, r, n, nf):  # pragma: no cover - compiled
    """Population variance across the n task vectors at tile row r, in `sce`'s operation order."""
    m = buf[0, r]
    for i in range(1, n):
        m = m + buf[i, r]
    m = m / nf
    v = ZERO
    for i in range(n):
        e = buf[i, r] - m
        v = v + e * e
    return v / nf


@njit(inline="always")
def _fill_taus(buf, base, xs, t0, t1):  # pragma: no cover - compiled
    for i in range(len(xs)):
        x = xs[i]
        for j in range(t0, t1):
            buf[i, j - t0] = load(x, j) - load(base, j)


@njit(parallel=True, nogil=True, cache=True)
def variance_high(base, xs, hist, nonzero):  # pragma: no cover - compiled
    """hist[c, b]: entries of chunk c whose variance across the τᵢ has top bits b; nonzero[c]: non-zero ones."""
    size = base.size
    n = len(xs)
    nf = np.float32(n)
    for c in prange(hist.shape[0]):
        buf = np.empty((n, TILE), dtype=np.float32)
        nz = 0
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            _fill_taus(buf, base, xs, t0, t1)
            for r in range(t1 - t0):
                v = _variance(buf, r, n, nf)
                hist[c, f32_bits(v) >> np.uint32(16)] += 1
                nz += v != ZERO
        nonzero[c] = nz


@njit(parallel=True, nogil=True, cache=True)
def variance_low(base, xs, bucket, hist):  # pragma: no cover - compiled
    """hist[c, l]: entries of chunk c whose variance bits are (bucket << 16) | l."""
    size = base.size
    n = len(xs)
    nf = np.float32(n)
    for c in prange(hist.shape[0]):
        buf = np.empty((n, TILE), dtype=np.float32)
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            _fill_taus(buf, base, xs, t0, t1)
            for r in range(t1 - t0):
                a = f32_bits(_variance(buf, r, n, nf))
                if (a >> np.uint32(16)) == bucket:
                    hist[c, a & np.uint32(0xFFFF)] += 1


@njit(inline="always")
def _selected(buf, r, n, nf, mode, thr, q):  # pragma: no cover - compiled
    """(keep this entry, whether it used up one of the chunk's ties at the threshold) for SCE's selection."""
    if mode == 0:
        return True, False
    if mode == 2:
        return False, False
    a = f32_bits(_variance(buf, r, n, nf))
    return a > thr or (a == thr and q > 0), a == thr


@njit(parallel=True, nogil=True, cache=True)
def sce_energies(base, xs, mode, thr, quotas, sums):  # pragma: no cover - compiled
    """sums[c, i] = Σ τᵢ² (float64) over chunk c's selected entries. mode: 0 all, 1 threshold, 2 none."""
    size = base.size
    n = len(xs)
    nf = np.float32(n)
    for c in prange(sums.shape[0]):
        buf = np.empty((n, TILE), dtype=np.float32)
        q = quotas[c]
        acc = np.zeros(n, dtype=np.float64)
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            _fill_taus(buf, base, xs, t0, t1)
            for r in range(t1 - t0):
                keep, tied = _selected(buf, r, n, nf, mode, thr, q)
                if tied:
                    q -= 1
                if keep:
                    for i in range(n):
                        v = np.float64(buf[i, r])
                        acc[i] += v * v
        for i in range(n):
            sums[c, i] = acc[i]


@njit(parallel=True, nogil=True, cache=True)
def sce_merge(base, xs, mode, thr, quotas, weights, out):  # pragma: no cover - compiled
    """base + Σ wᵢmᵢτᵢ / max(Σ wᵢmᵢ, 1e-6) over the selected τ, as `sce` computes it."""
    size = base.size
    n = len(xs)
    nf = np.float32(n)
    floor = np.float32(1e-6)
    for c in prange(-(-size // CHUNK)):
        buf = np.empty((n, TILE), dtype=np.float32)
        q = quotas[c]
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            _fill_taus(buf, base, xs, t0, t1)
            for r in range(t1 - t0):
                keep, tied = _selected(buf, r, n, nf, mode, thr, q)
                if tied:
                    q -= 1
                kf = ONE if keep else ZERO
                s = buf[0, r] * kf
                for i in range(1, n):
                    s = s + buf[i, r] * kf
                positive = s >= ZERO
                acc = ZERO
                div = ZERO
                for i in range(n):
                    p = buf[i, r] * kf
                    m = ONE if (p != ZERO and (p > ZERO) == positive) else ZERO
                    p = p * m
                    if i == 0:
                        acc = p * weights[0]
                        div = m * weights[0]
                    else:
                        acc = fma(p, weights[i], acc)
                        div = fma(m, weights[i], div)
                if div < floor:
                    div = floor
                store(out, t0 + r, acc / div + load(base, t0 + r))
