"""Exact, linear-time token alignment from offsets: which source position predicts what a pivot one does.

Two tokenizations of one text predict the same thing at pivot position t and source position u when the next
tokens of both, t+1 and u+1, start at the same place in the text: both contexts then hold exactly the text
before that place. The only subtlety is what "start" means with real tokenizers (see docs/align.md):

- byte-level BPE splits a multi-byte character into pieces that share the character's offsets, so a piece that
  starts inside an already covered character does not start at a character boundary; such a split character is
  one unit here, and the positions inside it have no counterpart;
- special tokens a tokenizer adds (BOS, a dummy prefix space) have empty or overlapping spans and start
  nothing;
- a tokenizer that trims whitespace out of offsets leaves gaps: a token starts where the text covered so far
  ends;
- a tokenizer whose normaliser recomposes text (Qwen2's NFC: `e` + U+0301 -> `é`, decomposed Hangul jamo -> one
  syllable) reports the composed character's offsets as its first original character only, leaving the marks it
  absorbed covered by no token; that gap belongs to the token before it (`recomposed_offsets`).

`boundaries` turns offsets into one start per token (or -1); `match_next_tokens` pairs equal starts.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import numpy as np

from fusechat.errors import FusechatError


def boundaries(offsets: np.ndarray) -> np.ndarray:
    """Where each token starts in the text, or -1 when it does not start at a clean character boundary.

    `offsets` (n, 2) character [start, end) per token. Returns (n,) int64: for token j, the end of the text
    covered by tokens 0..j-1 (0 for j = 0) if token j is non-empty and does not start inside that covered
    text, else -1. The clean starts are strictly increasing.
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    n = len(offsets)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    start, end = offsets[:, 0], offsets[:, 1]
    covered = np.zeros(n, dtype=np.int64)
    if n > 1:
        covered[1:] = np.maximum.accumulate(end[:-1])
    clean = (end > start) & (start >= covered)
    return np.where(clean, covered, -1)


# Unicode's stream-safe text format bounds a run of non-starters at 30; a gap is never folded further than this,
# so a pathological run costs a bounded number of normaliser calls.
MAX_FOLD = 32


def _folded_end(text: str, a: int, b: int, normalize: Callable[[str], str]) -> int:
    """How far into the gap text[a:b] the normaliser folds characters into the character before `a`.

    A character is folded when appending it to the text from the last starter before `a` does not lengthen
    the normalised text (recomposed into that character, or removed). Both are normalised between two ASCII
    letters, as inside running text: a normaliser that strips the ends of its input then does not count a space
    inside the text as removed, and the next token's own first character (perhaps a mark the normaliser leaves
    alone) does not change the count.
    """
    c = a - 1
    while c > 0 and a - c < MAX_FOLD and unicodedata.combining(text[c]):
        c -= 1
    base = len(normalize(f"x{text[c:a]}x"))
    e = a
    while e < b and e - a < MAX_FOLD and len(normalize(f"x{text[c : e + 1]}x")) <= base:
        e += 1
    return e


def recomposed_offsets(offsets: np.ndarray, text: str, normalize: Callable[[str], str] | None) -> np.ndarray:
    """Offsets with the characters a tokenizer's normaliser folded into a token given to that token.

    `offsets` (n, 2) in characters of `text`, as the tokenizer reported them for the original text; `normalize`
    the tokenizer's normaliser (`backend_tokenizer.normalizer.normalize_str`), None when it has none. An NFC
    normaliser turns `e` + U+0301 into `é` and reports the token holding it as covering `e` only: the mark lies
    in a gap before the next token, which does not contain it. Every token ending where such a gap starts (all
    byte-level pieces of the composed character) is extended over the folded characters; gaps the normaliser
    does not explain (trimmed whitespace) are left to the next token. Returns a new (n, 2) int64 array.
    """
    out = np.array(offsets, dtype=np.int64).reshape(-1, 2)
    n = len(out)
    if n == 0 or normalize is None:
        return out
    start, end = out[:, 0], out[:, 1]
    covered = np.maximum.accumulate(end)
    next_start = np.append(start[1:], len(text))
    next_real = np.append(end[1:] > start[1:], True)  # a special with (0, 0) opens no gap
    gap = next_real & (covered > 0) & (covered < len(text)) & (next_start > covered)  # offsets past the text: no gap
    for j in np.nonzero(gap)[0].tolist():
        a = int(covered[j])
        e = _folded_end(text, a, min(int(next_start[j]), len(text)), normalize)
        i = j  # the tokens ending at `a` (pieces of one character, maybe an empty special after them) precede j
        while e > a and i >= 0 and (end[i] == a or end[i] <= start[i]):
            if end[i] == a:
                out[i, 1] = e
            i -= 1
    return out


def char_to_byte(text: str) -> np.ndarray:
    """(len(text) + 1,) int64: the UTF-8 byte offset of every character offset of `text`."""
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    width = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
    out = np.zeros(len(cps) + 1, dtype=np.int64)
    np.cumsum(width, out=out[1:])
    return out


def byte_boundaries(
    offsets: np.ndarray, token_nbytes: np.ndarray, text: str, normalize: Callable[[str], str] | None = None
) -> np.ndarray:
    """Like `boundaries`, in UTF-8 bytes, and exact inside split characters.

    `token_nbytes` (n,) the bytes each token stands for. A clean start is converted to bytes; a piece starting
    inside covered text (a byte-level piece of a split character) starts where the previous token's bytes end,
    if that lands inside the piece's own character span. Anything else (a dummy prefix, a special) is -1.
    With the tokenizer's normaliser `normalize`, offsets first get the characters it folded (see
    `recomposed_offsets`), and a piece inside characters the normaliser changes starts nothing: its bytes are
    those of the normalised character, not the text's.
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    if normalize is not None:
        offsets = recomposed_offsets(offsets, text, normalize)
    chars = boundaries(offsets)
    to_byte = char_to_byte(text)
    limit = len(to_byte) - 1
    out = np.full(len(chars), -1, dtype=np.int64)
    clean = (chars >= 0) & (chars <= limit)
    out[clean] = to_byte[chars[clean]]
    start, end = np.clip(offsets[:, 0], 0, limit), np.clip(offsets[:, 1], 0, limit)
    for j in np.nonzero(~clean & (offsets[:, 1] > offsets[:, 0]))[0].tolist():
        if j == 0 or out[j - 1] < 0:
            continue
        at = out[j - 1] + int(token_nbytes[j - 1])
        if to_byte[start[j]] <= at < to_byte[end[j]] and at > out[j - 1]:
            span = text[start[j] : end[j]]
            if normalize is None or normalize(span) == span:
                out[j] = at
    return out


def match_next_tokens(pivot_starts: np.ndarray, source_starts: np.ndarray) -> np.ndarray:
    """For each pivot token j, the source token that starts at the same place, else -1.

    `pivot_starts` (n_p,), `source_starts` (n_s,): token starts from `boundaries` or `byte_boundaries` (the
    same unit on both sides), -1 for none, increasing otherwise. Returns (n_p,) int64. Token 0 is never paired
    (no position precedes it), nor a source token 0.
    """
    pb, sb = np.asarray(pivot_starts, dtype=np.int64), np.asarray(source_starts, dtype=np.int64)
    out = np.full(len(pb), -1, dtype=np.int64)
    if len(pb) < 2 or len(sb) < 2:
        return out
    src_idx = np.nonzero(sb >= 0)[0]
    src_idx = src_idx[src_idx >= 1]
    if len(src_idx) == 0:
        return out
    src_starts = sb[src_idx]
    where = np.searchsorted(src_starts, pb)
    where_c = np.clip(where, 0, len(src_starts) - 1)
    hit = (pb >= 0) & (where < len(src_starts)) & (src_starts[where_c] == pb)
    hit[0] = False
    out[hit] = src_idx[where_c[hit]]
    return out


def text_length(offsets: np.ndarray) -> int:
    """The number of characters a tokenization covers (its largest end offset)."""
    offsets = np.asarray(offsets).reshape(-1, 2)
    return int(offsets[:, 1].max()) if len(offsets) else 0


def check_same_text(row_id: str, text: str | None, offsets: dict[str, np.ndarray], names: str) -> None:
    """Fail when a tokenization does not cover the conversation's text: it was made from another text.

    `offsets` maps a role ("pivot", "source") to its (n, 2) offsets. With the text, each tokenization must
    stay inside it and reach its last non-space character (some tokenizers drop trailing whitespace). Without
    the text (conversations moved away) there is nothing to compare with; the callers still compare supervised
    bytes.
    """
    ends = {role: text_length(o) for role, o in offsets.items()}
    if text is not None:
        need, limit = len(text.rstrip()), len(text)
        for role, end in ends.items():
            if not need <= end <= limit:
                raise FusechatError(
                    f"{names}: conversation {row_id}: the {role} store's tokens cover {end} characters, the "
                    f"text has {limit}; it was made from another text, rerun its teacher pass"
                )


def positions_map(
    next_token_match: np.ndarray, pivot_positions: np.ndarray, source_positions: np.ndarray
) -> np.ndarray:
    """For each pivot supervised position, the row of the source's top-k that predicts the same text, else -1.

    `next_token_match` (n_p,) from an alignment (pivot token j -> source token j' whose start it shares);
    `pivot_positions` (p,), `source_positions` (q,) sorted. Returns (p,) int64 indices into the source's
    position rows: pivot position t is covered by source position u = match[t + 1] - 1 when u is one the
    source store scored.
    """
    pivot_positions = np.asarray(pivot_positions, dtype=np.int64)
    source_positions = np.asarray(source_positions, dtype=np.int64)
    out = np.full(len(pivot_positions), -1, dtype=np.int64)
    if len(pivot_positions) == 0 or len(source_positions) == 0:
        return out
    nxt = next_token_match[pivot_positions + 1]
    u = np.where(nxt >= 1, nxt - 1, -1)
    row = np.searchsorted(source_positions, u)
    row_c = np.clip(row, 0, len(source_positions) - 1)
    ok = (u >= 0) & (row < len(source_positions)) & (source_positions[row_c] == u)
    out[ok] = row_c[ok]
    return out
