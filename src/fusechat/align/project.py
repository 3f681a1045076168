"""Moving top-k distributions between vocabularies: pure array functions, vectorised over positions.

A source's top-k at one position becomes a sparse distribution over pivot ids: each entry goes to the pivot id
its vocabulary map names, entries landing on one pivot id add their probabilities, entries with no pivot id
are dropped (the mass they held is reported, never hidden). The same merge serves fusion, which mixes several
candidates' distributions. Padding follows the store contract: id -1 with log-prob -inf, ignored on read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def merge_topk(ids: np.ndarray, probs: np.ndarray, k: int, logprobs: np.ndarray | None = None):
    """Add probabilities of equal ids per row and keep the k largest.

    `ids` (p, n) int with -1 for nothing, `probs` (p, n) float. When an output entry comes from exactly one
    input entry and `logprobs` (p, n) is given, that log-prob is passed through untouched (no exp/log round
    trip). Returns `(out_ids (p, k) int32, out_logprobs (p, k) float32, totals)` where `totals` is a dict with
    `segment_rows`, `segment_ids`, `segment_probs`, `segment_logprobs` for every merged entry before
    truncation (used to read the probability of one given id), most likely first, ties by lower id.
    """
    ids = np.asarray(ids, dtype=np.int64)
    p, n = ids.shape
    out_ids = np.full((p, k), -1, dtype=np.int32)
    out_lp = np.full((p, k), -np.inf, dtype=np.float32)
    probs = np.asarray(probs, dtype=np.float64)
    rows = np.repeat(np.arange(p, dtype=np.int64), n)
    flat_ids, flat_p = ids.reshape(-1), probs.reshape(-1)
    flat_lp = None if logprobs is None else np.asarray(logprobs, dtype=np.float32).reshape(-1)
    keep = (flat_ids >= 0) & (flat_p > 0)
    rows, flat_ids, flat_p = rows[keep], flat_ids[keep], flat_p[keep]
    if flat_lp is not None:
        flat_lp = flat_lp[keep]
    order = np.lexsort((flat_ids, rows))
    rows, flat_ids, flat_p = rows[order], flat_ids[order], flat_p[order]
    if len(rows) == 0:  # no candidates at all (also when p or n is 0)
        empty = np.zeros(0, dtype=np.int64)
        return (
            out_ids,
            out_lp,
            dict(
                segment_rows=empty,
                segment_ids=empty,
                segment_probs=empty.astype(float),
                segment_logprobs=empty.astype(np.float32),
            ),
        )
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (rows[1:] != rows[:-1]) | (flat_ids[1:] != flat_ids[:-1])
    starts = np.nonzero(new)[0]
    seg_p = np.add.reduceat(flat_p, starts)
    seg_rows, seg_ids = rows[starts], flat_ids[starts]
    counts = np.diff(np.append(starts, len(rows)))
    with np.errstate(divide="ignore"):
        seg_lp = np.log(seg_p).astype(np.float32)
    if flat_lp is not None:
        single = counts == 1
        seg_lp[single] = flat_lp[order][starts[single]]
    rank_order = np.lexsort((seg_ids, -seg_p, seg_rows))
    r_rows = seg_rows[rank_order]
    first = np.searchsorted(r_rows, r_rows, side="left")
    rank = np.arange(len(r_rows)) - first
    take = rank < k
    sel = rank_order[take]
    out_ids[seg_rows[sel], rank[take]] = seg_ids[sel]
    out_lp[seg_rows[sel], rank[take]] = seg_lp[sel]
    return (
        out_ids,
        out_lp,
        dict(segment_rows=seg_rows, segment_ids=seg_ids, segment_probs=seg_p, segment_logprobs=seg_lp),
    )


@dataclass
class Projection:
    """A source's top-k moved onto pivot ids at some positions (shapes (p, k) and (p,))."""

    ids: np.ndarray
    logprobs: np.ndarray
    gold_logprob: np.ndarray
    mass_topk: np.ndarray  # probability the source's top-k held
    mass_kept: np.ndarray  # the part of it that landed on a pivot id


def project(
    src_ids: np.ndarray,
    src_logprobs: np.ndarray,
    vocab_map: np.ndarray,
    k: int,
    pivot_gold: np.ndarray,
    src_gold: np.ndarray,
    src_gold_logprob: np.ndarray,
) -> Projection:
    """Move source top-k rows onto pivot ids with a vocabulary map.

    `src_ids`, `src_logprobs` (p, k_s); `vocab_map` (V_s,) pivot id per source id, -1 if none; `pivot_gold`
    (p,) the pivot's next token at each position; `src_gold` (p,) the source's next token and
    `src_gold_logprob` (p,) its log-prob. The gold log-prob of the result is the mass that lands on the
    pivot's next token, counting the source's own next token even when it is outside the source's top-k.
    """
    src_ids = np.asarray(src_ids, dtype=np.int64)
    lp = np.asarray(src_logprobs, dtype=np.float32)
    valid = (src_ids >= 0) & (src_ids < len(vocab_map))
    mapped = np.where(valid, vocab_map[np.clip(src_ids, 0, len(vocab_map) - 1)], -1)
    probs = np.where(valid, np.exp(lp.astype(np.float64)), 0.0)
    mass_topk = probs.sum(axis=1)
    mass_kept = np.where(mapped >= 0, probs, 0.0).sum(axis=1)
    src_gold = np.asarray(src_gold, dtype=np.int64)
    gold_ok = (src_gold >= 0) & (src_gold < len(vocab_map))
    gold_mapped = np.where(gold_ok, vocab_map[np.clip(src_gold, 0, len(vocab_map) - 1)], -1)
    gold = np.asarray(pivot_gold, dtype=np.int64)[:, None]
    hit = (mapped == gold) & (gold >= 0)
    extra = ~(src_ids == src_gold[:, None]).any(axis=1) & (gold_mapped == gold[:, 0]) & (gold[:, 0] >= 0)
    src_gold_lp = np.asarray(src_gold_logprob, dtype=np.float32)
    total = np.where(hit, probs, 0.0).sum(axis=1) + np.where(extra, np.exp(src_gold_lp.astype(np.float64)), 0.0)
    n_hits = hit.sum(axis=1) + extra
    with np.errstate(divide="ignore"):
        gold_lp = np.log(total).astype(np.float32)
    only_topk = (n_hits == 1) & ~extra
    gold_lp[only_topk] = lp[only_topk][hit[only_topk]]
    gold_lp[(n_hits == 1) & extra] = src_gold_lp[(n_hits == 1) & extra]
    out_ids, out_lp, _ = merge_topk(mapped, probs, k, logprobs=lp)
    return Projection(out_ids, out_lp, gold_lp, mass_topk.astype(np.float32), mass_kept.astype(np.float32))
