"""Exact top-k selection in histogram passes over the float bits, and DARE's mask statistics, compiled.

A non-negative float32 orders like its bit pattern read as an integer, so the k-th largest magnitude is found
without sorting. Pass one counts each |δ| by a key: its top 16 bits (the sign masked off: 32,768 buckets)
and one more bit saying whether its low 16 bits are non-zero. That picks the bucket holding the k-th value,
and usually the value itself: task vectors of bf16 checkpoints are differences of bf16 numbers, and most of
them have all-zero low bits (bf16 is float32's top 16 bits), so unless the rank falls among the bucket's few
entries with low bits, the k-th largest is the bucket's lowest value (its bits are bucket << 16) and the
pass-one counts say how many equal it in each chunk. Otherwise pass two counts the low 16 bits of the entries
in that bucket, which gives the exact threshold T, how many entries are above it, and how many equal it in
each chunk.
Ties at T are kept first in memory order: entries equal to T are kept before a cut index, found by scanning
the one chunk where the count of kept ties runs out, so the output pass decides each entry on its own. The
passes run over fixed chunks in parallel and recompute the task vector δ = x − base from the inputs (cheaper
than storing it), so selection costs one or two reads of the inputs and no tensor-sized buffer. Same rule as
`methods/select.py` (plain torch), which the tests hold these passes equal to.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fusechat.merge.fast._prims import ABS_MASK, element_hash, f32_bits, load

CHUNK = 1 << 20  # elements per parallel work item
TILE = 4096  # elements per inner loop: the tile of every input stays in L1/L2 while the inputs are visited
HIGH = 1 << 15  # buckets: the top 16 bits of a non-negative float32
LOW = 1 << 16
KEYS = 1 << 16  # pass one's keys: bucket × (low bits non-zero)


def n_chunks(n: int) -> int:
    return max(1, -(-n // CHUNK))


@njit(inline="always")
def _magnitude_bits(bits, x, base, t0, t1):  # pragma: no cover - compiled
    """bits[:t1 - t0] = the bits of |x − base| over [t0, t1): a loop the compiler vectorises."""
    tile_x = x[t0:t1]
    tile_base = base[t0:t1]
    for r in range(t1 - t0):
        bits[r] = f32_bits(load(tile_x, r) - load(tile_base, r)) & ABS_MASK


@njit(inline="always")
def _magnitude_keys(keys, x, base, t0, t1):  # pragma: no cover - compiled
    """keys[:t1 - t0] = for each |x − base| over [t0, t1), its top 16 bits × 2 + (its low 16 bits ≠ 0)."""
    tile_x = x[t0:t1]
    tile_base = base[t0:t1]
    for r in range(t1 - t0):
        a = f32_bits(load(tile_x, r) - load(tile_base, r)) & ABS_MASK
        keys[r] = ((a >> np.uint32(16)) << np.uint32(1)) | np.uint32((a & np.uint32(0xFFFF)) != 0)


@njit(parallel=True, nogil=True, cache=True)
def magnitude_high(base, xs, active, want_sums, hist, abs_sums):  # pragma: no cover - compiled
    """hist[c, i, key] = entries of chunk c whose |δᵢ| has that key (see `_magnitude_keys`);
    abs_sums[c, i] = Σ |δᵢ| (float64), only when `want_sums` (a float64 sum is a serial chain of adds: it
    would double this pass's time).

    The keys of a tile are computed first (vectorised), then counted: in one fused loop the scalar histogram
    updates kept the subtraction from vectorising."""
    size = base.size
    for c in prange(hist.shape[0]):
        keys = np.empty(TILE, dtype=np.uint32)
        for i in range(len(xs)):
            if not active[i]:
                continue
            x = xs[i]
            h = hist[c, i]
            h[:] = 0
            s = 0.0
            for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
                t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
                _magnitude_keys(keys, x, base, t0, t1)
                for r in range(t1 - t0):
                    h[keys[r]] += 1
                if want_sums:
                    for r in range(t1 - t0):
                        s += abs(np.float64(load(x, t0 + r) - load(base, t0 + r)))
            abs_sums[c, i] = s


@njit(parallel=True, nogil=True, cache=True)
def magnitude_low(base, xs, active, buckets, hist):  # pragma: no cover - compiled
    """hist[c, i, l] = entries of chunk c whose |δᵢ| bits are (buckets[i] << 16) | l."""
    size = base.size
    for c in prange(hist.shape[0]):
        bits = np.empty(TILE, dtype=np.uint32)
        for i in range(len(xs)):
            if not active[i]:
                continue
            x = xs[i]
            h = hist[c, i]
            h[:] = 0
            bucket = buckets[i]
            for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
                t1 = min(size, t0 + TILE, (c + 1) * CHUNK)
                _magnitude_bits(bits, x, base, t0, t1)
                for r in range(t1 - t0):
                    a = bits[r]
                    if (a >> np.uint32(16)) == bucket:
                        h[a & np.uint32(0xFFFF)] += 1


@njit(parallel=True, nogil=True, cache=True)
def magnitude_kept_abs(base, xs, active, thresholds, cuts, sums):  # pragma: no cover - compiled
    """sums[c, i] = Σ |δᵢ| over the entries of chunk c that the selection keeps (TIES with rescale)."""
    size = base.size
    for c in prange(sums.shape[0]):
        for i in range(len(xs)):
            if not active[i]:
                continue
            x = xs[i]
            t = thresholds[i]
            cut = cuts[i]
            s = 0.0
            for j in range(c * CHUNK, min(size, (c + 1) * CHUNK)):
                d = load(x, j) - load(base, j)
                a = f32_bits(d) & ABS_MASK
                if a > t or (a == t and j < cut):
                    s += abs(np.float64(d))
            sums[c, i] = s


@njit(nogil=True, cache=True)
def nth_equal_magnitude(base, x, threshold, start, m):  # pragma: no cover - compiled
    """The index of the m-th entry (1-based) from `start` whose |x − base| has the bits `threshold`.

    Tile by tile: the bits and their count of matches are computed vectorised, and only the tile where the
    count runs out is walked entry by entry."""
    bits = np.empty(TILE, dtype=np.uint32)
    for t0 in range(start, base.size, TILE):
        t1 = min(base.size, t0 + TILE)
        _magnitude_bits(bits, x, base, t0, t1)
        found = 0
        for r in range(t1 - t0):
            found += bits[r] == threshold
        if found < m:
            m -= found
            continue
        for r in range(t1 - t0):
            if bits[r] == threshold:
                m -= 1
                if m == 0:
                    return t0 + r
    return base.size


@njit(parallel=True, nogil=True, cache=True)
def random_abs_sums(base, xs, active, keys, limits, before, after):  # pragma: no cover - compiled
    """before[c, i] = Σ |δᵢ| over chunk c; after[c, i] = the same over the entries DARE's mask keeps.

    Tile by tile: the |δ| and the mask are computed in loops of their own (vectorised), then summed in float64
    with four accumulators (a single chain of float64 adds was most of this pass's time)."""
    size = base.size
    for c in prange(before.shape[0]):
        mags = np.empty(TILE, dtype=np.float32)
        kept = np.empty(TILE, dtype=np.float32)
        for i in range(len(xs)):
            if not active[i]:
                continue
            x = xs[i]
            k0, k1, limit = keys[i, 0], keys[i, 1], limits[i]
            s0, s1, s2, s3 = 0.0, 0.0, 0.0, 0.0
            q0, q1, q2, q3 = 0.0, 0.0, 0.0, 0.0
            for t0 in range(c * CHUNK, min(size, (c + 1) * CHUNK), TILE):
                m = min(size, t0 + TILE, (c + 1) * CHUNK) - t0
                tile_x = x[t0 : t0 + m]
                tile_base = base[t0 : t0 + m]
                for r in range(m):
                    mags[r] = abs(load(tile_x, r) - load(tile_base, r))
                for r in range(m):
                    kept[r] = np.float32(element_hash(t0 + r, k0, k1) < limit)
                for r in range(0, m - 3, 4):
                    a0, a1 = np.float64(mags[r]), np.float64(mags[r + 1])
                    a2, a3 = np.float64(mags[r + 2]), np.float64(mags[r + 3])
                    s0 += a0
                    s1 += a1
                    s2 += a2
                    s3 += a3
                    q0 += a0 * kept[r]
                    q1 += a1 * kept[r + 1]
                    q2 += a2 * kept[r + 2]
                    q3 += a3 * kept[r + 3]
                for r in range(m - m % 4, m):
                    a = np.float64(mags[r])
                    s0 += a
                    q0 += a * kept[r]
            before[c, i] = (s0 + s1) + (s2 + s3)
            after[c, i] = (q0 + q1) + (q2 + q3)


def high_bucket(hist: np.ndarray, k: int) -> tuple[int, int]:
    """From a top-bits histogram (summed over chunks), the bucket of the k-th largest and the count above it."""
    above = np.cumsum(hist[::-1])[::-1]  # above[b] = entries in buckets >= b
    bucket = int(np.flatnonzero(above >= k)[-1])
    return bucket, int(above[bucket + 1]) if bucket + 1 < above.size else 0


def bucket_floor(keys: np.ndarray, k: int) -> tuple[int, int, int | None]:
    """From pass one's key counts (summed over chunks): the bucket of the k-th largest, the count above that
    bucket, and the k-th largest's bits when they are the bucket's lowest value (bucket << 16), else None.

    The bucket's entries with non-zero low bits are all above its lowest value; when fewer of them than the
    rank needs exist, the rank is reached among the entries equal to that value and no second pass is needed.
    """
    bucket, n_above = high_bucket(keys[0::2] + keys[1::2], k)
    with_low_bits = int(keys[2 * bucket + 1])
    return bucket, n_above, (bucket << 16) if k > n_above + with_low_bits else None


def threshold(low: np.ndarray, bucket: int, n_above: int, k: int) -> tuple[int, int, np.ndarray]:
    """The k-th largest's bits T, how many entries equal to T are kept, and each chunk's count of them.

    low: (chunks, 65536) counts of the bucket's entries by their low bits. Entries above T are all kept; of
    those equal to T, the first k − (number above T) in memory order are.
    """
    total = low.sum(axis=0)
    above = np.cumsum(total[::-1])[::-1]
    rank = k - n_above
    lo = int(np.flatnonzero(above >= rank)[-1])
    n_greater = n_above + (int(above[lo + 1]) if lo + 1 < above.size else 0)
    return (bucket << 16) | lo, k - n_greater, low[:, lo].astype(np.int64)


def cut_index(equal: np.ndarray, needed: int, size: int, scan) -> int:
    """The flat index before which entries equal to the threshold are kept (`needed` of them).

    equal: per chunk, its entries equal to the threshold; scan(start, m): the index of the m-th such entry
    from `start`. Only the chunk where the count reaches `needed` is scanned.
    """
    if needed >= int(equal.sum()):
        return size
    before = np.cumsum(equal) - equal
    c = int(np.flatnonzero(before + equal >= needed)[0])
    return int(scan(c * CHUNK, needed - int(before[c]))) + 1
