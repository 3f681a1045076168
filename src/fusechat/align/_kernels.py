"""Compiled loops for DTW (imported lazily: numba compiles on first use and caches the machine code on disk).

Kept apart from `dtw.py` so importing fusechat never imports numba; every function here has a plain Python
definition in `dtw.py` that the tests hold it equal to. Edit distances themselves come from rapidfuzz's
bit-parallel C++ (about 50x faster here than a compiled textbook loop).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _contains(fa, a0, a1, fb, b0, b1):  # pragma: no cover - compiled
    """Whether string a occurs in string b."""
    la, lb = a1 - a0, b1 - b0
    for s in range(lb - la + 1):
        ok = True
        for k in range(la):
            if fa[a0 + k] != fb[b0 + s + k]:
                ok = False
                break
        if ok:
            return True
    return False


@njit(cache=True, nogil=True)
def pair_costs(fa, sa, fb, sb, lev):  # pragma: no cover - compiled
    """(U_a, U_b) int64 costs in tenths from edit distances `lev` (U_a, U_b): x1 on containment, else x10."""
    na, nb = len(sa) - 1, len(sb) - 1
    out = np.empty((na, nb), dtype=np.int64)
    for i in range(na):
        for j in range(nb):
            d = lev[i, j]
            la, lb = sa[i + 1] - sa[i], sb[j + 1] - sb[j]
            if la <= lb:
                inside = _contains(fa, sa[i], sa[i + 1], fb, sb[j], sb[j + 1])
            else:
                inside = _contains(fb, sb[j], sb[j + 1], fa, sa[i], sa[i + 1])
            out[i, j] = d if inside else 10 * d
    return out


@njit(cache=True, nogil=True)
def dtw(ia, ib, costs):  # pragma: no cover - compiled
    """DTW over sequences of string ids with a cost table; the path (L, 2) of dtw.dtw_reference."""
    n, m = len(ia), len(ib)
    big = np.iinfo(np.int64).max // 4
    dist = np.empty((n, m), dtype=np.int64)
    for i in range(n):
        ci = costs[ia[i]]
        for j in range(m):
            c = ci[ib[j]]
            if i == 0 and j == 0:
                dist[i, j] = c
                continue
            best = big
            if i > 0 and j > 0:
                best = dist[i - 1, j - 1]
            if i > 0 and dist[i - 1, j] < best:
                best = dist[i - 1, j]
            if j > 0 and dist[i, j - 1] < best:
                best = dist[i, j - 1]
            dist[i, j] = c + best
    path = np.empty((n + m, 2), dtype=np.int64)
    i, j, k = n - 1, m - 1, 0
    path[0, 0], path[0, 1] = i, j
    while i > 0 or j > 0:
        d = dist[i - 1, j - 1] if (i > 0 and j > 0) else big
        u = dist[i - 1, j] if i > 0 else big
        left = dist[i, j - 1] if j > 0 else big
        if d <= u and d <= left:
            i, j = i - 1, j - 1
        elif u <= left:
            i -= 1
        else:
            j -= 1
        k += 1
        path[k, 0], path[k, 1] = i, j
    return path[: k + 1][::-1].copy()
