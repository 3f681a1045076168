"""Fusion functions as pure array math: which candidate distributions make a target, and their mixture.

Candidates are the pivot's own distribution (index 0, always available) and each source's aligned one
(available at the positions it covers). MinCE picks per conversation the candidate with the lowest negative
log-likelihood per UTF-8 byte of the supervised text: per-token cross-entropy is not comparable across
tokenizers, per-byte is (with one tokenizer the two orders agree). Scores are float32, and an exact tie is not
settled by candidate order (the reference's bf16 scores settled near ties toward the pivot): tied candidates
are mixed with equal weight and the tie is counted. AvgCE weights all candidates by softmax(-score);
token-level MinCE picks, at each position, the candidate giving the gold next token the highest probability.
Wherever no chosen candidate covers a position, the pivot's own distribution is used.
"""

from __future__ import annotations

import numpy as np

from fusechat.align.project import merge_topk

METHODS = ("mince", "avgce", "token-mince")


def bytes_scores(nll: np.ndarray, n_bytes: int) -> np.ndarray:
    """(C,) float32 negative log-likelihood per byte of each candidate on one conversation."""
    nll = np.asarray(nll, dtype=np.float32)
    return nll / np.float32(max(n_bytes, 1))


def sequence_weights(method: str, scores: np.ndarray) -> tuple[np.ndarray, int, bool]:
    """Candidate weights (C,) for one conversation, the chosen index (-1 if none alone), and whether it tied.

    `mince`: weight 1 on the lowest score; candidates with exactly equal float32 scores share it equally.
    `avgce`: softmax of -score (computed in float64).
    """
    scores = np.asarray(scores, dtype=np.float32)
    if method == "mince":
        tied = scores == scores.min()
        w = tied / tied.sum()
        return w.astype(np.float64), int(np.argmax(tied)) if tied.sum() == 1 else -1, bool(tied.sum() > 1)
    if method == "avgce":
        z = -scores.astype(np.float64)
        w = np.exp(z - z.max())
        return w / w.sum(), -1, False
    raise ValueError(f"no sequence weights for method {method!r}")


def token_weights(gold: np.ndarray, covered: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token-level MinCE: (C, p) gold log-probs and coverage in; (p, C) weights, (p,) tie flags and (p,) the
    winner's gold log-prob (the choice's own score) out.

    At each position the covered candidate with the highest gold log-prob (lowest token cross-entropy) wins;
    exact ties share equally.
    """
    g = np.where(covered, np.asarray(gold, dtype=np.float32), -np.inf)
    best = g.max(axis=0)
    win = (g == best[None, :]) & covered & np.isfinite(best)[None, :]
    n = win.sum(axis=0)
    w = np.where(n[None, :] > 0, win / np.maximum(n, 1)[None, :], 0.0).T
    return w.astype(np.float64), n > 1, best


def normalise(logprobs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Probabilities renormalised over each row's kept entries (id >= 0). (..., k) -> (..., k) float64."""
    lp = np.where(ids >= 0, np.asarray(logprobs, dtype=np.float64), -np.inf)
    top = lp.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    p = np.exp(lp - top)
    total = p.sum(axis=-1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), 0.0)


def mix(ids: np.ndarray, logprobs: np.ndarray, covered: np.ndarray, weights: np.ndarray, k: int):
    """The fused top-k at every position.

    `ids`, `logprobs` (C, p, k_in) candidates' top-k; `covered` (C, p) where each is available (candidate 0,
    the pivot, everywhere); `weights` (p, C) wanted weights. Weights of uncovered candidates are dropped and
    the rest renormalised; a position left with none falls back to the pivot. Returns `(ids (p, k) int32,
    logprobs (p, k) float32 normalised over the kept entries, totals of the merge, fallback (p,) bool)`.
    """
    ids = np.asarray(ids, dtype=np.int64)
    c, p, k_in = ids.shape
    w = np.asarray(weights, dtype=np.float64) * np.asarray(covered, dtype=bool).T
    total = w.sum(axis=1)
    fallback = total <= 0
    w[fallback] = 0.0
    w[fallback, 0] = 1.0
    w /= w.sum(axis=1, keepdims=True)
    probs = normalise(logprobs, ids) * w.T[:, :, None]  # (C, p, k_in)
    flat_ids = ids.transpose(1, 0, 2).reshape(p, c * k_in)
    flat_p = probs.transpose(1, 0, 2).reshape(p, c * k_in)
    out_ids, out_lp, totals = merge_topk(flat_ids, flat_p, k)
    kept = np.where(out_ids >= 0, np.exp(out_lp.astype(np.float64)), 0.0).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        out_lp = np.where(out_ids >= 0, out_lp - np.log(np.where(kept > 0, kept, 1.0)), -np.inf)
    return out_ids, out_lp.astype(np.float32), totals, fallback
