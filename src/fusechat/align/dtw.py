"""The paper's DTW token alignment, compiled, with the plain O(n·m) reference it must equal.

FuseChat aligns two tokenizations by DTW over token strings: matching two tokens costs the edit distance of
their strings with space markers removed, a tenth of that when one string contains the other. The reference
ran it in pure Python at about 4 µs a cell. Here the cost of each distinct pair of strings is computed once
and the recurrence and traceback run in numba-compiled loops (edit distances: rapidfuzz's C++): the recurrence
is sequential in both directions, so numpy cannot vectorise it without changing the order of additions, and a
banded search could miss the optimum.

Costs are integers in tenths (edit distance × 10, or × 1 on containment), so sums are exact and ties are
decided the same way by every implementation; the traceback prefers the diagonal, then the pivot's step, then
the source's. A pivot position t is covered by source position u when the path steps diagonally from (t, u)
into (t + 1, u + 1): both next tokens start a new match together, the DTW analogue of sharing a boundary.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fusechat.align.vocab import Vocab


def vocab_strings(vocab: Vocab) -> list[str]:
    """Every id's string as DTW compares it: the normalised text with spaces (the space markers) removed."""
    return [t.replace(" ", "") for t in vocab.texts()]


def levenshtein(a: str, b: str) -> int:
    """Plain edit distance (insert, delete, substitute: cost 1 each)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def pair_cost(a: str, b: str) -> int:
    """Cost of matching two token strings, in tenths of an edit."""
    d = levenshtein(a, b)
    return d if (a in b or b in a) else 10 * d


def dtw_reference(a: list[str], b: list[str], cost: Callable[[str, str], int] = pair_cost) -> list[tuple[int, int]]:
    """The plain O(n·m) DTW path from (0, 0) to (n-1, m-1), one `cost` call per cell (the definition).

    `cost` defaults to `pair_cost` in pure Python; the benchmark passes one backed by a C edit distance to time the
    authors' way of running the same recurrence."""
    n, m = len(a), len(b)
    inf = float("inf")
    dist = [[inf] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            c = cost(a[i], b[j])
            if i == 0 and j == 0:
                dist[i][j] = c
                continue
            best = min(
                dist[i - 1][j - 1] if i and j else inf,
                dist[i - 1][j] if i else inf,
                dist[i][j - 1] if j else inf,
            )
            dist[i][j] = c + best
    i, j, path = n - 1, m - 1, [(n - 1, m - 1)]
    while i or j:
        options = [
            dist[i - 1][j - 1] if i and j else inf,
            dist[i - 1][j] if i else inf,
            dist[i][j - 1] if j else inf,
        ]
        move = options.index(min(options))
        i, j = (i - 1, j - 1) if move == 0 else (i - 1, j) if move == 1 else (i, j - 1)
        path.append((i, j))
    return path[::-1]


def _encode(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Code points of many strings as one flat int32 array plus (len + 1,) start offsets."""
    lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
    starts = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    flat = np.fromiter((ord(c) for s in strings for c in s), dtype=np.int32, count=int(starts[-1]))
    return flat, starts


def dtw_path(a: list[str], b: list[str]) -> np.ndarray:
    """The same path as `dtw_reference`, fast. Returns (L, 2) int64 pairs (i, j) from (0, 0) to (n-1, m-1)."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    from fusechat.align import _kernels

    if not a or not b:
        raise ValueError("DTW needs two non-empty token sequences")
    ua, ia = np.unique(np.array(a, dtype=object), return_inverse=True)
    ub, ib = np.unique(np.array(b, dtype=object), return_inverse=True)
    fa, sa = _encode(list(ua))
    fb, sb = _encode(list(ub))
    lev = process.cdist(list(ua), list(ub), scorer=Levenshtein.distance, dtype=np.int64, workers=1)
    costs = _kernels.pair_costs(fa, sa, fb, sb, lev)
    return _kernels.dtw(ia.astype(np.int64), ib.astype(np.int64), costs)


def next_token_match(path: np.ndarray, n_pivot: int) -> np.ndarray:
    """For each pivot token j, the source token j' a DTW path enters together with it (diagonally), else -1.

    (L, 2) -> (n_pivot,) int64; the same meaning as `sequence.match_next_tokens`.
    """
    path = np.asarray(path, dtype=np.int64)
    out = np.full(n_pivot, -1, dtype=np.int64)
    step = np.diff(path, axis=0)
    diag = (step[:, 0] == 1) & (step[:, 1] == 1)
    entered = path[1:][diag]
    out[entered[:, 0]] = entered[:, 1]
    return out
