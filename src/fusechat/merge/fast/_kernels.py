"""The compiled passes that produce TA / TIES / DARE and SCE outputs in one sweep over the inputs.

Each kernel reads the inputs in their stored form (bf16 bits or float32), computes in float32 with the same
operations in the same order as the torch function of `methods/` (so results are equal bit for bit), and
writes the output in its final dtype (bf16 rounded to nearest even, or float32) straight into the buffer the
writer will write. Work is split in fixed chunks run in parallel; inside a chunk, a tile of a few thousand
entries of every input is processed column by column (one input at a time, branch-free, so the compiler
vectorises the loops) while it sits in cache. Reductions accumulate in float64 per chunk.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fusechat.merge.fast._prims import ABS_MASK, element_hash, f32_bits, fma, load, store
from fusechat.merge.fast._select import CHUNK, TILE

ONE = np.float32(1.0)
ZERO = np.float32(0.0)

SPARSE_NONE, SPARSE_MAGNITUDE, SPARSE_RANDOM = 0, 1, 2


@njit(inline="always")
def _task_vector(row, x, base, t0, mode, thr, cut, k0, k1, limit, scale, w):  # pragma: no cover - compiled
    """row = wᵢ · sparsify(xᵢ − base) over the tile starting at t0, as `task_arithmetic` orders it.

    x, base: the tile's slices (indices from 0, so the loops carry no negative-index checks and vectorise).
    """
    m = row.size
    if mode == SPARSE_MAGNITUDE:
        before = cut - t0  # tile entries before the cut index keep their ties
        for r in range(m):
            d = load(x, r) - load(base, r)
            a = f32_bits(d) & ABS_MASK
            keep = (a > thr) | ((a == thr) & (r < before))
            row[r] = ((d * np.float32(keep)) * scale) * w
    elif mode == SPARSE_RANDOM:
        for r in range(m):
            d = load(x, r) - load(base, r)
            keep = element_hash(t0 + r, k0, k1) < limit
            row[r] = ((d * np.float32(keep)) * scale) * w
    else:
        for r in range(m):
            row[r] = (load(x, r) - load(base, r)) * w


@njit(inline="always")
def _elect(buf, n, m, weights, acc, div, tot):  # pragma: no cover - compiled
    """Sign election over the first m tile rows: acc = Σ kept pᵢ, div = Σ kept wᵢ (`_elect_`'s order)."""
    for r in range(m):
        tot[r] = buf[0, r]
    for i in range(1, n):
        for r in range(m):
            tot[r] = tot[r] + buf[i, r]
    w0 = weights[0]
    for r in range(m):
        p = buf[0, r]
        keep = np.float32((p != ZERO) & ((p > ZERO) == (tot[r] >= ZERO)))
        acc[r] = p * keep
        div[r] = keep * w0
    for i in range(1, n):
        w = weights[i]
        for r in range(m):
            p = buf[i, r]
            keep = np.float32((p != ZERO) & ((p > ZERO) == (tot[r] >= ZERO)))
            acc[r] = acc[r] + p * keep
            div[r] = fma(keep, w, div[r])


@njit(parallel=True, nogil=True, cache=True)
def gta(
    base, xs, mode, active, thresholds, cuts, keys, limits, scales, weights, elect, normalize, total, lam, out
):  # pragma: no cover - compiled
    """base + λ·combine(wᵢ·sparsify(xᵢ − base)) as `task_arithmetic` computes it (TA, TIES, DARE)."""
    size = base.size
    n = len(xs)
    for c in prange(-(-size // CHUNK)):
        buf = np.empty((n, TILE), dtype=np.float32)
        acc = np.empty(TILE, dtype=np.float32)
        div = np.empty(TILE, dtype=np.float32)
        tot = np.empty(TILE, dtype=np.float32)
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            m = t1 - t0
            tile_base = base[t0:t1]
            for i in range(n):
                _task_vector(
                    buf[i, :m],
                    xs[i][t0:t1],
                    tile_base,
                    t0,
                    mode if active[i] else SPARSE_NONE,
                    thresholds[i],
                    cuts[i],
                    keys[i, 0],
                    keys[i, 1],
                    limits[i],
                    scales[i],
                    weights[i],
                )
            if elect:
                _elect(buf, n, m, weights, acc, div, tot)
                if normalize:
                    for r in range(m):
                        d = div[r]
                        acc[r] = acc[r] / (d + np.float32(d == ZERO))
            else:
                for r in range(m):
                    acc[r] = buf[0, r]
                for i in range(1, n):
                    for r in range(m):
                        acc[r] = acc[r] + buf[i, r]
                if normalize:
                    for r in range(m):
                        acc[r] = acc[r] / total
            if lam != ONE:
                for r in range(m):
                    acc[r] = acc[r] * lam
            tile_out = out[t0:t1]
            for r in range(m):
                store(tile_out, r, acc[r] + load(tile_base, r))


@njit(inline="always")
def _fill_variance(buf, var, base, xs, t0, t1, nf):  # pragma: no cover - compiled
    """buf[i, :] = τᵢ over the tile; var = their population variance, in `sce`'s operation order."""
    n = len(xs)
    m = t1 - t0
    tile_base = base[t0:t1]
    for i in range(n):
        x = xs[i][t0:t1]
        row = buf[i, :m]
        for r in range(m):
            row[r] = load(x, r) - load(tile_base, r)
    for r in range(m):  # var holds the mean first
        var[r] = buf[0, r]
    for i in range(1, n):
        for r in range(m):
            var[r] = var[r] + buf[i, r]
    for r in range(m):
        var[r] = var[r] / nf
    for r in range(m):
        mean = var[r]
        v = ZERO
        for i in range(n):
            e = buf[i, r] - mean
            v = v + e * e
        var[r] = v / nf


@njit(parallel=True, nogil=True, cache=True)
def variance_high(base, xs, hist, nonzero):  # pragma: no cover - compiled
    """hist[c, b]: entries of chunk c whose variance across the τᵢ has top bits b; nonzero[c]: non-zero ones."""
    size = base.size
    n = len(xs)
    nf = np.float32(n)
    for c in prange(hist.shape[0]):
        buf = np.empty((n, TILE), dtype=np.float32)
        var = np.empty(TILE, dtype=np.float32)
        hist[c] = 0
        nz = 0
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            _fill_variance(buf, var, base, xs, t0, t1, nf)
            for r in range(t1 - t0):
                v = var[r]
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
        var = np.empty(TILE, dtype=np.float32)
        hist[c] = 0
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            _fill_variance(buf, var, base, xs, t0, t1, nf)
            for r in range(t1 - t0):
                a = f32_bits(var[r])
                if (a >> np.uint32(16)) == bucket:
                    hist[c, a & np.uint32(0xFFFF)] += 1


@njit(nogil=True, cache=True)
def nth_equal_variance(base, xs, threshold, start, m):  # pragma: no cover - compiled
    """The index of the m-th entry (1-based) from `start` whose variance has the bits `threshold`."""
    n = len(xs)
    buf = np.empty((n, TILE), dtype=np.float32)
    var = np.empty(TILE, dtype=np.float32)
    for t0 in range(start, base.size, TILE):
        t1 = min(base.size, t0 + TILE)
        _fill_variance(buf, var, base, xs, t0, t1, np.float32(n))
        for r in range(t1 - t0):
            if f32_bits(var[r]) == threshold:
                m -= 1
                if m == 0:
                    return t0 + r
    return base.size


@njit(inline="always")
def _select_tile(buf, var, n, t0, m, mode, thr, cut):  # pragma: no cover - compiled
    """Zero the unselected entries of the tile's τᵢ (SCE's select; mode 0 all, 1 threshold, 2 none)."""
    if mode == 0:
        return
    for r in range(m):
        if mode == 2:
            keep = ZERO
        else:
            a = f32_bits(var[r])
            keep = np.float32((a > thr) | ((a == thr) & (t0 + r < cut)))
        for i in range(n):
            buf[i, r] = buf[i, r] * keep


@njit(parallel=True, nogil=True, cache=True)
def sce_energies(base, xs, mode, thr, cut, sums):  # pragma: no cover - compiled
    """sums[c, i] = Σ τᵢ² (float64) over chunk c's selected entries."""
    size = base.size
    n = len(xs)
    nf = np.float32(n)
    for c in prange(sums.shape[0]):
        buf = np.empty((n, TILE), dtype=np.float32)
        var = np.empty(TILE, dtype=np.float32)
        for i in range(n):
            sums[c, i] = 0.0
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            _fill_variance(buf, var, base, xs, t0, t1, nf)
            _select_tile(buf, var, n, t0, t1 - t0, mode, thr, cut)
            m = t1 - t0
            for i in range(n):  # four float64 accumulators: one serial chain of adds is latency-bound
                s0, s1, s2, s3 = 0.0, 0.0, 0.0, 0.0
                for r in range(0, m - 3, 4):
                    v0, v1 = np.float64(buf[i, r]), np.float64(buf[i, r + 1])
                    v2, v3 = np.float64(buf[i, r + 2]), np.float64(buf[i, r + 3])
                    s0 += v0 * v0
                    s1 += v1 * v1
                    s2 += v2 * v2
                    s3 += v3 * v3
                for r in range(m - m % 4, m):
                    v = np.float64(buf[i, r])
                    s0 += v * v
                sums[c, i] += (s0 + s1) + (s2 + s3)


@njit(parallel=True, nogil=True, cache=True)
def sce_merge(base, xs, mode, thr, cut, weights, out):  # pragma: no cover - compiled
    """base + Σ wᵢmᵢτᵢ / max(Σ wᵢmᵢ, 1e-6) over the selected τ, as `sce` computes it."""
    size = base.size
    n = len(xs)
    nf = np.float32(n)
    floor = np.float32(1e-6)
    for c in prange(-(-size // CHUNK)):
        buf = np.empty((n, TILE), dtype=np.float32)
        var = np.empty(TILE, dtype=np.float32)
        acc = np.empty(TILE, dtype=np.float32)
        div = np.empty(TILE, dtype=np.float32)
        for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
            t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
            m = t1 - t0
            _fill_variance(buf, var, base, xs, t0, t1, nf)
            _select_tile(buf, var, n, t0, m, mode, thr, cut)
            for r in range(m):  # var now holds the sum of the selected τ
                var[r] = buf[0, r]
            for i in range(1, n):
                for r in range(m):
                    var[r] = var[r] + buf[i, r]
            w0 = weights[0]
            for r in range(m):
                p = buf[0, r]
                keep = np.float32((p != ZERO) & ((p > ZERO) == (var[r] >= ZERO)))
                acc[r] = (p * keep) * w0
                div[r] = keep * w0
            for i in range(1, n):
                w = weights[i]
                for r in range(m):
                    p = buf[i, r]
                    keep = np.float32((p != ZERO) & ((p > ZERO) == (var[r] >= ZERO)))
                    acc[r] = fma(p * keep, w, acc[r])
                    div[r] = fma(keep, w, div[r])
            tile_base = base[t0:t1]
            tile_out = out[t0:t1]
            for r in range(m):
                store(tile_out, r, acc[r] / max(div[r], floor) + load(tile_base, r))
