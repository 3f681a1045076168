"""Offset alignment on hand-made traps whose correct answer is known."""

from __future__ import annotations

import numpy as np

from fusechat.align.sequence import (
    boundaries,
    byte_boundaries,
    char_to_byte,
    match_next_tokens,
    positions_map,
)


def spans(text: str, pieces: list[str]) -> np.ndarray:
    """Offsets of consecutive pieces that tile `text`."""
    out, at = [], 0
    for p in pieces:
        assert text[at : at + len(p)] == p
        out.append((at, at + len(p)))
        at += len(p)
    return np.array(out)


def test_one_to_one_many_to_one_one_to_many():
    text = "Hello world"
    piv = spans(text, ["Hello", " world"])
    src = spans(text, ["Hel", "lo", " wor", "ld"])
    m = match_next_tokens(boundaries(piv), boundaries(src))
    assert m.tolist() == [-1, 2]  # " world" starts with source token 2
    back = match_next_tokens(boundaries(src), boundaries(piv))
    assert back.tolist() == [-1, -1, 1, -1]  # only " wor" shares a start with the pivot


def test_whitespace_boundaries_that_differ():
    # SmolLM2 `ĊĊĠĠĠ` + `Ġreturn`; Qwen `,ĊĊ` + `ĠĠĠ` + `Ġreturn`; Gemma `\n\n` + `▁▁▁▁` + `return`.
    text = "x,\n\n    return"
    a = spans(text, ["x", ",", "\n\n   ", " return"])
    b = spans(text, ["x", ",\n\n", "   ", " return"])
    c = spans(text, ["x", ",", "\n\n", "    ", "return"])
    assert match_next_tokens(boundaries(a), boundaries(b)).tolist() == [-1, 1, -1, 3]
    assert match_next_tokens(boundaries(a), boundaries(c)).tolist() == [-1, 1, 2, -1]


def test_specials_with_empty_offsets_and_a_dummy_prefix():
    text = "Hi there"
    piv = np.array([(0, 0), (0, 2), (2, 8)])  # BOS added by the tokenizer
    src = np.array([(0, 1), (0, 2), (2, 8)])  # a dummy-prefix `▁` overlapping the first token
    assert boundaries(piv).tolist() == [-1, 0, 2]
    assert boundaries(src).tolist() == [0, -1, 2]
    assert match_next_tokens(boundaries(piv), boundaries(src)).tolist() == [-1, -1, 2]
    assert len(text) == 8


def test_trimmed_offsets_leave_a_gap_that_belongs_to_the_next_token():
    piv = np.array([(0, 5), (6, 11)])  # " world" reported as (6, 11): the space trimmed
    src = np.array([(0, 5), (5, 11)])
    assert match_next_tokens(boundaries(piv), boundaries(src)).tolist() == [-1, 1]


def test_split_multibyte_characters_align_inside_the_character():
    text = "a 日語"
    # byte-level pieces: "a", "Ġæ" (1,3), "Ĺ" (2,3), "¥" (2,3), "èª" (3,4), "ŀ" (3,4)
    piv = np.array([(0, 1), (1, 3), (2, 3), (2, 3), (3, 4), (3, 4)])
    piv_bytes = np.array([1, 2, 1, 1, 2, 1])
    # another byte-level split of the same text: "a", "Ġ" (1,2), "æĹ" (2,3), "¥" (2,3), "èªŀ" (3,4)
    src = np.array([(0, 1), (1, 2), (2, 3), (2, 3), (3, 4)])
    src_bytes = np.array([1, 1, 2, 1, 3])
    assert char_to_byte(text).tolist() == [0, 1, 2, 5, 8]
    pb, sb = byte_boundaries(piv, piv_bytes, text), byte_boundaries(src, src_bytes, text)
    assert pb.tolist() == [0, 1, 3, 4, 5, 7]
    assert sb.tolist() == [0, 1, 2, 4, 5]
    assert match_next_tokens(pb, sb).tolist() == [-1, 1, -1, 3, 4, -1]
    # in character units the pieces inside a character have no start at all
    assert boundaries(piv).tolist() == [0, 1, -1, -1, 3, -1]


def test_source_token_straddling_the_span_end():
    # Gemma merges "." and "<" across the end of an assistant turn: ".<" straddles the span end.
    text = "Done.<|im_end|>"
    piv = spans(text, ["Done", ".", "<|im_end|>"])
    src = spans(text, ["Done", ".<", "|", "im", "_end", "|>"])
    m = match_next_tokens(boundaries(piv), boundaries(src))
    assert m.tolist() == [-1, 1, -1]  # "." shares its start with ".<"; "<|im_end|>" has no counterpart
    rows = positions_map(m, np.array([0, 1]), np.array([0, 1, 2]))
    assert rows.tolist() == [0, -1]


def test_positions_map_needs_the_source_to_have_scored_the_position():
    m = np.array([-1, 1, 2, 3])
    assert positions_map(m, np.array([0, 1, 2]), np.array([0, 2])).tolist() == [0, -1, 1]
