"""The compiled DTW equals the plain O(n·m) reference, and its coverage rule."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fusechat.align.dtw import dtw_path, dtw_reference, levenshtein, next_token_match, pair_cost

tokens = st.lists(st.text(alphabet="ab c", max_size=3), min_size=1, max_size=9)


@settings(max_examples=300, deadline=None)
@given(tokens, tokens)
def test_fast_path_equals_reference(a, b):
    assert [tuple(p) for p in dtw_path(a, b).tolist()] == dtw_reference(a, b)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abc", max_size=6), st.text(alphabet="abc", max_size=6))
def test_costs(a, b):
    d = levenshtein(a, b)
    assert d == levenshtein(b, a) and (d == 0) == (a == b)
    assert pair_cost(a, b) == (d if a in b or b in a else 10 * d)


def test_identical_sequences_align_on_the_diagonal():
    a = ["Hello", "world", ",", "this", "is", "it"]
    path = dtw_path(a, a)
    assert path.tolist() == [[i, i] for i in range(len(a))]
    assert next_token_match(path, len(a)).tolist() == [-1, 1, 2, 3, 4, 5]


def test_many_to_one_and_one_to_many():
    a = ["Hello", "world"]
    b = ["Hel", "lo", "world"]
    path = dtw_path(a, b)
    assert path.tolist() == dtw_reference_list(a, b)
    assert path.tolist() == [[0, 0], [0, 1], [1, 2]]
    assert next_token_match(path, 2).tolist() == [-1, 2]  # "world" entered diagonally with source token 2


def dtw_reference_list(a, b):
    return [list(p) for p in dtw_reference(a, b)]


def test_real_sized_random_pair_matches_reference():
    rng = np.random.default_rng(0)
    words = ["the", "quick", "brown", "fox", "\n", "  ", "return", "x", "日本", "ing", ""]
    a = [words[i] for i in rng.integers(0, len(words), 60)]
    b = [words[i] for i in rng.integers(0, len(words), 70)]
    assert dtw_path(a, b).tolist() == dtw_reference_list(a, b)
