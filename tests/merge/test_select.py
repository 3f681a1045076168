"""The radix top-k mask equals a sort-based reference, ties included."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusechat.merge.methods.select import topk_mask


def reference(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Sort descending with a stable sort: among equal scores, earlier positions first."""
    flat = scores.reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order] = True
    return mask.view(scores.shape)


@pytest.mark.parametrize("n,k", [(1, 1), (10, 3), (1000, 1), (1000, 999), (100_000, 50_000)])
def test_random(n, k):
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n + k)).abs()
    assert torch.equal(topk_mask(scores, k), reference(scores, k))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 1e-30, 3e38]), min_size=1, max_size=40), st.data())
def test_ties_and_extremes(values, data):
    k = data.draw(st.integers(0, len(values)))
    scores = torch.tensor(values, dtype=torch.float32)
    mask = topk_mask(scores, k)
    assert int(mask.sum()) == k
    assert torch.equal(mask, reference(scores, k))


@pytest.mark.parametrize("n,k", [(10, 3), (1000, 500), (100_000, 1)])
def test_by_magnitude_equals_abs(n, k):
    values = torch.randn(n, generator=torch.Generator().manual_seed(n))
    values[::7] = -values[1::7][: values[::7].numel()]  # equal magnitudes of both signs
    assert torch.equal(topk_mask(values, k, by_magnitude=True), reference(values.abs(), k))
