"""Exact top-k selection in two histogram passes over the float bits, and DARE's mask statistics, compiled.

A non-negative float32 orders like its bit pattern read as an integer, so the k-th largest magnitude is found
without sorting: pass one counts the top 16 bits (the sign masked off: 32,768 buckets) and picks the bucket
holding the k-th value; pass two counts the low 16 bits of the entries in that bucket, which gives the exact
threshold T, how many entries are above it, and how many equal it in each chunk. Ties at T are kept first in
memory order: chunk c may keep `quota[c]` of its entries equal to T. Both passes run over fixed chunks in
parallel and recompute the task vector δ = x − base from the inputs (cheaper than storing it), so selection
costs two reads of the inputs and no tensor-sized buffer. Same rule as `methods/select.py`, which the tests
hold these passes equal to.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fusechat.merge.fast._prims import ABS_MASK, element_hash, f32_bits, load

CHUNK = 1 << 20  # elements per parallel work item; also the granularity of the tie quotas
TILE = 4096  # elements per inner loop: the tile of every input stays in L1/L2 while the inputs are visited
HIGH = 1 << 15
LOW = 1 << 16


def n_chunks(n: int) -> int:
    return max(1, -(-n // CHUNK))


@njit(parallel=True, nogil=True, cache=True)
def magnitude_high(base, xs, active, hist, abs_sums):  # pragma: no cover - compiled
    """hist[c, i, b] = entries of chunk c whose |δᵢ| has top bits b; abs_sums[c, i] = Σ |δᵢ| (float64)."""
    size = base.size
    for c in prange(hist.shape[0]):
        for i in range(len(xs)):
            if not active[i]:
                continue
            x = xs[i]
            s = 0.0
            for j in range(c * CHUNK, min(size, (c + 1) * CHUNK)):
                d = load(x, j) - load(base, j)
                hist[c, i, (f32_bits(d) & ABS_MASK) >> np.uint32(16)] += 1
                s += abs(np.float64(d))
            abs_sums[c, i] = s


@njit(parallel=True, nogil=True, cache=True)
def magnitude_low(base, xs, active, buckets, hist):  # pragma: no cover - compiled
    """hist[c, i, l] = entries of chunk c whose |δᵢ| bits are (buckets[i] << 16) | l."""
    size = base.size
    for c in prange(hist.shape[0]):
        for i in range(len(xs)):
            if not active[i]:
                continue
            x = xs[i]
            bucket = buckets[i]
            for j in range(c * CHUNK, min(size, (c + 1) * CHUNK)):
                a = f32_bits(load(x, j) - load(base, j)) & ABS_MASK
                if (a >> np.uint32(16)) == bucket:
                    hist[c, i, a & np.uint32(0xFFFF)] += 1


@njit(parallel=True, nogil=True, cache=True)
def magnitude_kept_abs(base, xs, active, thresholds, quotas, sums):  # pragma: no cover - compiled
    """sums[c, i] = Σ |δᵢ| over the entries of chunk c that the selection keeps (TIES with rescale)."""
    size = base.size
    for c in prange(sums.shape[0]):
        for i in range(len(xs)):
            if not active[i]:
                continue
            x = xs[i]
            t = thresholds[i]
            left = quotas[i, c]
            s = 0.0
            for j in range(c * CHUNK, min(size, (c + 1) * CHUNK)):
                d = load(x, j) - load(base, j)
                a = f32_bits(d) & ABS_MASK
                if a > t or (a == t and left > 0):
                    s += abs(np.float64(d))
                if a == t:
                    left -= 1
            sums[c, i] = s


@njit(parallel=True, nogil=True, cache=True)
def random_abs_sums(base, xs, active, keys, limits, before, after):  # pragma: no cover - compiled
    """before[c, i] = Σ |δᵢ| over chunk c; after[c, i] = the same over the entries DARE's mask keeps."""
    size = base.size
    for c in prange(before.shape[0]):
        for i in range(len(xs)):
            if not active[i]:
                continue
            x = xs[i]
            k0, k1, limit = keys[i, 0], keys[i, 1], limits[i]
            s = 0.0
            s_kept = 0.0
            for j in range(c * CHUNK, min(size, (c + 1) * CHUNK)):
                d = abs(np.float64(load(x, j) - load(base, j)))
                s += d
                if element_hash(j, k0, k1) < limit:
                    s_kept += d
            before[c, i] = s
            after[c, i] = s_kept


def high_bucket(hist: np.ndarray, k: int) -> tuple[int, int]:
    """From a top-bits histogram (summed over chunks), the bucket of the k-th largest and the count above it."""
    above = np.cumsum(hist[::-1])[::-1]  # above[b] = entries in buckets >= b
    bucket = int(np.flatnonzero(above >= k)[-1])
    return bucket, int(above[bucket + 1]) if bucket + 1 < above.size else 0


def threshold_and_quotas(low: np.ndarray, bucket: int, n_above: int, k: int) -> tuple[int, np.ndarray]:
    """The k-th largest's bits T and each chunk's quota of entries equal to T, from per-chunk low histograms.

    low: (chunks, 65536) counts of the bucket's entries by their low bits. Entries above T are all kept; of
    those equal to T, the first k − (number above T) in memory order are, chunk by chunk.
    """
    total = low.sum(axis=0)
    above = np.cumsum(total[::-1])[::-1]
    rank = k - n_above
    lo = int(np.flatnonzero(above >= rank)[-1])
    n_greater = n_above + (int(above[lo + 1]) if lo + 1 < above.size else 0)
    needed = k - n_greater
    equal = low[:, lo].astype(np.int64)
    before = np.cumsum(equal) - equal
    quotas = np.clip(needed - before, 0, equal)
    return (bucket << 16) | lo, quotas
