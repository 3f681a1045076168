"""Vocabulary maps on hand cases, MinED against its plain definition, and projection mass accounting."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from fusechat.align.maps import count_pairs, exact_map, mined_map, mined_map_reference, prefix_map, stats_map
from fusechat.align.project import merge_topk, project
from fusechat.align.vocab import Vocab
from tests.stores import KINDS


def vocab(pieces: list[bytes]) -> Vocab:
    partial = np.array([_partial(p) for p in pieces], dtype=bool)
    return Vocab(pieces=pieces, partial=partial)


def _partial(p: bytes) -> bool:
    try:
        p.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


PIVOT = vocab([b"", b" Hello", b" world", b"\n", b"\n\n", b"Hel", b" ", b"\xe6", b" wor", b" Hello"])
SOURCE = vocab([b" Hello", b" world", b"\n\n", b"\n\n\n", b"Help", b"\xe6\x97", b"", b" wo"])


def test_exact():
    assert exact_map(SOURCE, PIVOT).tolist() == [1, 2, 4, -1, -1, -1, -1, -1]  # duplicates: lowest id


def test_mined_hand_case_and_tie_rule():
    m = mined_map(SOURCE, PIVOT)
    assert m.tolist()[:3] == [1, 2, 4]
    assert m[3] == 4  # "\n\n\n" -> "\n\n" (distance 1)
    assert m[4] == 5  # "Help" -> "Hel" (distance 1, the only one)
    assert m[6] == -1  # no token
    assert m[7] == 8  # " wo" -> " wor" (1) beats "\n" ... and " " (2)
    assert m.tolist() == mined_map_reference(SOURCE, PIVOT).tolist()


def test_mined_equals_reference_on_random_vocabularies():
    rng = np.random.default_rng(1)
    alphabet = [b"a", b"b", b" ", b"\n", b"\xc3\xa9", b"\xe6"]
    make = lambda n: vocab([b"".join(rng.choice(alphabet, rng.integers(1, 5))) for _ in range(n)])  # noqa: E731
    for _ in range(5):
        s, p = make(40), make(60)
        assert mined_map(s, p, chunk_cells=500).tolist() == mined_map_reference(s, p).tolist()
    far = vocab([b"xyzxyzq" + bytes([97 + i]) for i in range(10)] + [b"ab", b"\xe6\x97"])
    s, p = far, make(30)  # most nearest tokens are more than the banded pass's 2 edits away
    assert mined_map(s, p, chunk_cells=100).tolist() == mined_map_reference(s, p).tolist()


def test_stats_prefers_exact_then_most_co_aligned():
    pairs = np.array([[3, 4], [3, 3], [3, 3], [4, 5], [4, 1], [4, 1], [4, 1], [0, 2]])
    uniq, counts = count_pairs(pairs)
    assert dict(zip(map(tuple, uniq.tolist()), counts.tolist(), strict=True))[(4, 1)] == 3
    m = stats_map(SOURCE, PIVOT, uniq, counts)
    assert m[0] == 1  # exact " Hello" wins although it was co-aligned with " world" once
    # "\n\n\n": "\n\n" (distance 1, count 1) scores 1 x sigmoid(-1) = 0.269; "\n" (2, count 2) 0.238 wins
    assert m[3] == 3
    assert m[4] == 1  # "Help": " Hello" co-aligned 3 times beats "Hel" once
    assert m[7] == -1  # never co-aligned, no exact match


def test_prefix_uses_the_pivots_own_tokenization():
    tok = PreTrainedTokenizerFast(tokenizer_object=KINDS["bytelevel"]())
    from fusechat.align.vocab import vocab_bytes

    piv = vocab_bytes(tok)
    src = vocab([b" helloooo", b" is", b"\xe6\x97\xa5\xe6", b"zzzz"])
    m = prefix_map(src, piv, tok)
    first = tok(" helloooo", add_special_tokens=False)["input_ids"][0]
    assert m[0] == first and piv.pieces[first] == b" hello"
    assert piv.pieces[m[1]] == b" is"
    assert src.pieces[2].startswith(piv.pieces[m[2]]) and len(piv.pieces[m[2]]) >= 1
    assert piv.pieces[m[3]] == b"z"


def test_merge_adds_equal_ids_and_pads():
    ids = np.array([[5, 3, 5, -1], [1, 2, 3, 4]])
    probs = np.array([[0.25, 0.3, 0.125, 0.4], [0.1, 0.1, 0.1, 0.0]])
    out_ids, out_lp, _ = merge_topk(ids, probs, 3)
    assert out_ids[0].tolist() == [5, 3, -1]
    np.testing.assert_allclose(np.exp(out_lp[0, :2]), [0.375, 0.3], rtol=1e-6)
    assert np.isneginf(out_lp[0, 2])
    assert out_ids[1].tolist() == [1, 2, 3]  # ties by lower id; the zero-probability id 4 is dropped


def test_projection_mass_accounting():
    vmap = np.array([7, 7, -1, 2, 9], dtype=np.int32)
    src_ids = np.array([[0, 1, 2, 3], [4, 2, -1, 0]])
    with np.errstate(divide="ignore"):
        src_lp = np.log(np.array([[0.4, 0.3, 0.2, 0.05], [0.5, 0.25, 0.0, 0.125]])).astype(np.float16)
    pr = project(
        src_ids,
        src_lp,
        vmap,
        3,
        pivot_gold=np.array([7, 3]),
        src_gold=np.array([1, 3]),
        src_gold_logprob=np.log([0.3, 0.01]),
    )
    assert pr.ids.tolist() == [[7, 2, -1], [9, 7, -1]]
    np.testing.assert_allclose(np.exp(pr.logprobs[0, :2]), [0.7, 0.05], rtol=2e-3)
    np.testing.assert_allclose(pr.mass_topk, [0.95, 0.875], rtol=2e-3)
    np.testing.assert_allclose(pr.mass_kept, [0.75, 0.625], rtol=2e-3)
    np.testing.assert_allclose(np.exp(pr.gold_logprob[0]), 0.7, rtol=2e-3)  # both source ids land on 7
    assert np.isneginf(pr.gold_logprob[1])  # pivot gold 3 receives nothing


def test_projection_counts_the_sources_own_next_token_outside_its_top_k():
    vmap = np.arange(10, dtype=np.int32)
    pr = project(
        np.array([[1, 2]]),
        np.log(np.array([[0.5, 0.3]])),
        vmap,
        2,
        pivot_gold=np.array([6]),
        src_gold=np.array([6]),
        src_gold_logprob=np.array([np.log(0.01)]),
    )
    np.testing.assert_allclose(np.exp(pr.gold_logprob), [0.01], rtol=1e-5)
    assert pr.ids.tolist() == [[1, 2]]


@pytest.mark.parametrize("map_name", ["exact", "mined", "prefix"])
def test_identity_vocabularies_map_to_themselves(map_name):
    from fusechat.align.vocab import vocab_bytes

    tok = PreTrainedTokenizerFast(tokenizer_object=KINDS["metaspace"]())
    v = vocab_bytes(tok)
    m = {
        "exact": lambda: exact_map(v, v),
        "mined": lambda: mined_map(v, v),
        "prefix": lambda: prefix_map(v, v, tok),
    }
    got = m[map_name]()
    firsts = {}
    for i, p in enumerate(v.pieces):
        firsts.setdefault(p, i)
    assert got.tolist() == [firsts[p] if p else -1 for p in v.pieces]
