"""The chunked fusion loss equals the dense reference, in value and in gradients, on random and edge
inputs."""

from __future__ import annotations

import pytest
import torch

from fusechat.train.dense import dense_fusion_loss
from fusechat.train.loss import Head, fusion_loss, target_distribution


def make_case(n=13, h=8, v=37, k=5, seed=0, bias=False, pad_frac=0.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=dtype)
    weight = torch.randn(v, h, generator=g, dtype=dtype)
    b = torch.randn(v, generator=g, dtype=dtype) if bias else None
    labels = torch.randint(0, v, (n,), generator=g)
    # distinct ids per row, most likely first, as the store holds them
    ids = torch.stack([torch.randperm(v, generator=g)[:k] for _ in range(n)])
    logits = torch.randn(n, v, generator=g, dtype=torch.float64) * 2
    lp = torch.log_softmax(logits, -1).gather(1, ids)
    lp, order = lp.sort(dim=1, descending=True)
    ids = ids.gather(1, order)
    if pad_frac:
        pad = torch.rand(n, k, generator=g) < pad_frac
        pad[:, 0] = False
        ids = ids.masked_fill(pad, -1)
        lp = lp.masked_fill(pad, float("-inf"))
    return hidden, weight, b, labels, ids, lp.to(torch.float16)


def both(hidden, weight, b, labels, ids, lp, scale=1.0, softcap=None, chunk_size=4, **kw):
    """(loss, grads) for the chunked and the dense implementation."""
    out = []
    for chunked in (True, False):
        hd = hidden.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        bb = None if b is None else b.clone().requires_grad_(True)
        head = Head(w, bb, scale=scale, softcap=softcap)
        if chunked:
            loss = fusion_loss(hd, head, labels, ids, lp, chunk_size=chunk_size, **kw).loss
        else:
            loss = dense_fusion_loss(hd, head, labels, ids, lp, **kw)
        loss.backward()
        out.append((loss.detach(), hd.grad, w.grad, None if bb is None else bb.grad))
    return out


def assert_same(a, b, tol=1e-9):
    for x, y in zip(a, b, strict=True):
        if x is None:
            assert y is None
            continue
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("tail", [False, True])
def test_chunked_equals_dense(lam, tail):
    case = make_case(seed=int(lam * 10) + 7 * tail)
    chunked, dense = both(*case, lam=lam, tail=tail)
    assert torch.isfinite(chunked[0])
    assert_same(chunked, dense)


@pytest.mark.parametrize("chunk_size", [1, 3, 13, 100])
def test_chunk_size_does_not_change_the_result(chunk_size):
    case = make_case(seed=3, pad_frac=0.3)
    chunked, dense = both(*case, lam=0.5, chunk_size=chunk_size)
    assert_same(chunked, dense)


def test_temperature_bias_scale_and_softcap():
    case = make_case(seed=4, bias=True, pad_frac=0.2)
    chunked, dense = both(*case, lam=0.4, temperature=2.0, scale=0.7, softcap=3.0)
    assert_same(chunked, dense)


def test_padding_entries_are_ignored():
    hidden, weight, b, labels, ids, lp = make_case(seed=5, k=4)
    padded_ids = torch.cat([ids, torch.full((ids.shape[0], 3), -1)], dim=1)
    padded_lp = torch.cat([lp, torch.full((lp.shape[0], 3), float("-inf"), dtype=lp.dtype)], dim=1)
    for tail in (False, True):
        plain = both(hidden, weight, b, labels, ids, lp, lam=0.2, tail=tail)[0]
        padded = both(hidden, weight, b, labels, padded_ids, padded_lp, lam=0.2, tail=tail)
        assert_same(plain, padded[0])
        assert_same(padded[0], padded[1])


def test_k_equal_one_is_a_one_hot_target():
    hidden, weight, b, labels, ids, lp = make_case(seed=6, k=1)
    chunked, dense = both(hidden, weight, b, labels, ids, lp, lam=0.0)
    assert_same(chunked, dense)
    # q renormalised over one kept id is a one-hot: the fusion loss is the cross-entropy of that id
    clm_on_ids = fusion_loss(hidden, Head(weight), ids[:, 0], lam=1.0).loss
    torch.testing.assert_close(chunked[0], clm_on_ids, rtol=1e-12, atol=1e-12)


def test_all_positions_unsupervised_gives_zero_and_zero_gradients():
    hidden, weight, *_ = make_case(n=1)
    hd = hidden[:0].clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    parts = fusion_loss(
        hd, Head(w), torch.zeros(0, dtype=torch.long), torch.zeros(0, 5, dtype=torch.long), torch.zeros(0, 5)
    )
    parts.loss.backward()
    assert parts.loss.item() == 0.0 and parts.positions == 0
    assert torch.count_nonzero(w.grad) == 0


def test_a_row_of_padding_only_contributes_no_fusion_term():
    hidden, weight, b, labels, ids, lp = make_case(seed=8)
    ids[2] = -1
    lp[2] = float("-inf")
    chunked, dense = both(hidden, weight, b, labels, ids, lp, lam=0.0)
    assert torch.isfinite(chunked[0])
    assert_same(chunked, dense)
    assert torch.count_nonzero(chunked[1][2]) == 0


def test_tail_bucket_with_every_token_kept_and_with_mass_over_one():
    hidden, weight, b, labels, ids, lp = make_case(v=6, k=6, seed=9)
    chunked, dense = both(hidden, weight, b, labels, ids, lp, lam=0.0, tail=True)
    assert torch.isfinite(chunked[0])
    assert_same(chunked, dense)
    q, tail = target_distribution(ids, lp + 0.01, tail=True)  # kept mass above 1 after rounding
    torch.testing.assert_close(q.sum(-1), torch.ones(q.shape[0]), rtol=1e-6, atol=1e-6)
    assert (tail == 0).all()


def test_tail_bucket_differs_from_renormalising():
    case = make_case(seed=10, k=3)
    renorm = both(*case, lam=0.0, tail=False)[0][0]
    tail = both(*case, lam=0.0, tail=True)[0][0]
    assert abs(renorm - tail) > 1e-3


def test_normalizer_divides_the_sum():
    case = make_case(seed=11)
    mean = both(*case, lam=0.5)[0]
    summed = both(*case, lam=0.5, normalizer=1.0)[0]
    torch.testing.assert_close(summed[0] / case[0].shape[0], mean[0])
    torch.testing.assert_close(summed[2] / case[0].shape[0], mean[2])


def test_float32_inputs_match_float64_reference():
    h, w, b, labels, ids, lp = make_case(seed=12, dtype=torch.float64)
    ref = both(h, w, b, labels, ids, lp, lam=0.9)[1]
    got = both(h.float(), w.float(), b, labels, ids, lp, lam=0.9)[0]
    assert_same([g.double() if g is not None else None for g in got], ref, tol=1e-4)


def test_no_gradient_buffers_without_grad():
    h, w, b, labels, ids, lp = make_case(seed=13)
    parts = fusion_loss(h, Head(w), labels, ids, lp)
    assert not parts.loss.requires_grad
    torch.testing.assert_close(parts.loss, dense_fusion_loss(h, Head(w), labels, ids, lp))


def test_bad_arguments_are_refused():
    h, w, b, labels, ids, lp = make_case()
    with pytest.raises(ValueError, match="lam"):
        fusion_loss(h, Head(w), labels, ids, lp, lam=1.5)
    with pytest.raises(ValueError, match="temperature 1"):
        fusion_loss(h, Head(w), labels, ids, lp, temperature=2.0, tail=True)
    with pytest.raises(ValueError, match="required"):
        fusion_loss(h, Head(w), labels, lam=0.5)


def test_upstream_gradient_scales_the_result():
    h, w, b, labels, ids, lp = make_case(seed=14, bias=True)
    grads = []
    for factor in (1.0, 3.0):
        hd, wd, bd = (t.clone().requires_grad_(True) for t in (h, w, b))
        (fusion_loss(hd, Head(wd, bd), labels, ids, lp, lam=0.6).loss * factor).backward()
        grads.append((hd.grad, wd.grad, bd.grad))
    for one, three in zip(*grads, strict=True):
        torch.testing.assert_close(three, 3 * one)
