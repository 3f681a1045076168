"""Vocabulary maps: for every source token id, the pivot token id its probability goes to (or -1: dropped).

All maps compare the normalised bytes of `vocab.vocab_bytes`, so ` Hello` is one string whether a vocabulary
spells it `ĠHello` or `▁Hello`. A map is an int32 array of the source vocabulary's size; projection reads it.

- `exact`: the pivot token with the same bytes (lowest id if several).
- `mined`: minimum edit distance (FuseLLM's MinED) over the pivot vocabulary, computed only for tokens with no
  exact match, in C++ by rapidfuzz in chunks (never a Python loop over V_p x V_s). Ties: smaller length
  difference, then lower pivot id.
- `stats`: FuseChat's mapping statistics: among the pivot tokens a source token was aligned with in the
  corpus, the one minimising edit distance x sigmoid(-count) (an exact string always wins; among inexact ones
  the most often co-aligned); counts are sparse pairs, never a V_p x V_s matrix. Tokens never co-aligned fall
  back to exact.
- `prefix` (ours): a token with no exact match gives its probability to the first token of the pivot's own
  tokenization of its text; a piece of a split character, which has no text, to the longest pivot token that
  is a byte prefix of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fusechat.align.vocab import Vocab

MAPS = ("exact", "mined", "stats", "prefix")


def exact_map(source: Vocab, pivot: Vocab) -> np.ndarray:
    """(V_s,) int32: the lowest pivot id with the same bytes, else -1."""
    index: dict[bytes, int] = {}
    for i, piece in enumerate(pivot.pieces):
        if piece and piece not in index:
            index[piece] = i
    return np.array([index.get(p, -1) if p else -1 for p in source.pieces], dtype=np.int32)


def mined_map(source: Vocab, pivot: Vocab, chunk_cells: int = 1 << 24) -> np.ndarray:
    """(V_s,) int32: the pivot id at minimum edit distance (exact matches kept; see the module docstring)."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    out = exact_map(source, pivot)
    s_texts, p_texts = source.texts(), pivot.texts()
    choice_ids = np.array([i for i, p in enumerate(pivot.pieces) if p], dtype=np.int64)
    choices = [p_texts[i] for i in choice_ids]
    c_len = np.array([len(c) for c in choices], dtype=np.int64)
    todo = [i for i, p in enumerate(source.pieces) if p and out[i] < 0]
    queries = sorted({s_texts[i] for i in todo})
    if not queries or not choices:
        return out
    best: dict[str, int] = {}
    step = max(1, chunk_cells // len(choices))
    for lo in range(0, len(queries), step):
        q = queries[lo : lo + step]
        # One full pass: rapidfuzz is already bit-parallel on short strings, so a banded first pass (score_cutoff)
        # costs more than it saves (docs/benchmarks.md, the MinED section).
        dist = process.cdist(q, choices, scorer=Levenshtein.distance, dtype=np.int32, workers=1)
        low = dist.min(axis=1, keepdims=True)
        q_len = np.array([len(s) for s in q], dtype=np.int64)[:, None]
        tie_key = np.where(dist == low, np.abs(q_len - c_len[None, :]), np.iinfo(np.int64).max)
        pick = np.argmin(tie_key, axis=1)  # first = lowest pivot id among the closest lengths
        for s, j in zip(q, pick.tolist(), strict=True):
            best[s] = int(choice_ids[j])
    for i in todo:
        out[i] = best[s_texts[i]]
    return out


def mined_map_reference(source: Vocab, pivot: Vocab) -> np.ndarray:
    """The plain definition of `mined_map` (O(V_s x V_p) Python), for tests on small vocabularies."""
    from fusechat.align.dtw import levenshtein

    s_texts, p_texts = source.texts(), pivot.texts()
    out = np.full(len(source), -1, dtype=np.int32)
    for i, s in enumerate(s_texts):
        if not source.pieces[i]:
            continue
        keys = [(levenshtein(s, p), abs(len(s) - len(p)), j) for j, p in enumerate(p_texts) if pivot.pieces[j]]
        if keys:
            out[i] = min(keys)[2]
    return out


def stats_map(source: Vocab, pivot: Vocab, pairs: np.ndarray, counts: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """(V_s,) int32 from co-alignment counts: `pairs` (m, 2) distinct (source id, pivot id), `counts` (m,)."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    out = exact_map(source, pivot)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    ok = (pairs[:, 0] < len(source)) & (pairs[:, 1] < len(pivot)) & (pairs.min(axis=1) >= 0)
    pairs, counts = pairs[ok], np.asarray(counts, dtype=np.float64)[ok]
    if len(pairs) == 0:
        return out
    s_texts, p_texts = source.texts(), pivot.texts()
    dist = np.empty(len(pairs), dtype=np.float64)
    for lo in range(0, len(pairs), chunk):  # element-wise distances in C++, a chunk of pairs at a time
        part = pairs[lo : lo + chunk]
        dist[lo : lo + len(part)] = process.cpdist(
            [s_texts[i] for i in part[:, 0].tolist()],
            [p_texts[i] for i in part[:, 1].tolist()],
            scorer=Levenshtein.distance,
            dtype=np.int32,
            workers=1,
        )
    with np.errstate(divide="ignore"):
        score = np.log(dist) - np.logaddexp(0.0, counts)  # log(edit distance x sigmoid(-count)), no underflow
    order = np.lexsort((pairs[:, 1], -counts, score, pairs[:, 0]))
    src_sorted = pairs[order, 0]
    first = np.ones(len(order), dtype=bool)
    first[1:] = src_sorted[1:] != src_sorted[:-1]
    chosen = order[first]
    free = out[pairs[chosen, 0]] < 0  # an exact string match is distance 0: it always wins
    out[pairs[chosen[free], 0]] = pairs[chosen[free], 1]
    return out


def prefix_map(source: Vocab, pivot: Vocab, pivot_tokenizer: Any) -> np.ndarray:
    """(V_s,) int32: exact where possible, else the first token of the pivot's own tokenization."""
    out = exact_map(source, pivot)
    index: dict[bytes, int] = {}
    for i, piece in enumerate(pivot.pieces):
        if piece and piece not in index:
            index[piece] = i
    todo = [i for i, p in enumerate(source.pieces) if p and out[i] < 0]
    texts = [i for i in todo if not source.partial[i]]
    if texts:
        backend = pivot_tokenizer.backend_tokenizer
        encoded = backend.encode_batch([source.pieces[i].decode("utf-8") for i in texts], add_special_tokens=False)
        for i, enc in zip(texts, encoded, strict=True):
            first = next((t for t in enc.ids if 0 <= t < len(pivot) and pivot.pieces[t]), None)
            if first is not None and source.pieces[i].startswith(pivot.pieces[first]):
                out[i] = first
    for i in todo:
        if out[i] >= 0:
            continue
        piece = source.pieces[i]
        for end in range(len(piece), 0, -1):
            j = index.get(piece[:end])
            if j is not None:
                out[i] = j
                break
    return out


def count_pairs(pairs: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sparse counts: (m, 2) pairs (optional (m,) weights) in; distinct pairs (d, 2) and sums (d,) out."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return pairs, np.zeros(0, dtype=np.int64)
    width = int(pairs[:, 1].max()) + 1  # one int64 key per pair: no (m, 2) row sort
    keys, inverse = np.unique(pairs[:, 0] * width + pairs[:, 1], return_inverse=True)
    w = np.ones(len(pairs), dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
    sums = np.bincount(inverse.reshape(-1), weights=w, minlength=len(keys)).astype(np.int64)
    return np.stack([keys // width, keys % width], axis=1), sums
