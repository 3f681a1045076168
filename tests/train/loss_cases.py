"""Inputs and checks shared by the loss tests that compare a fast path with a reference: a random case with
padding and a heavy tail, one forward + backward, and the stated half-precision tolerance.

The tolerance, for inputs already representable in the half dtype (so only the loss's own rounding shows): the
loss within 1e-5 relative (the logits are fp32 from fp32-accumulated products, the statistics fp32); each
gradient within 1e-2 relative error (Frobenius norm) and every entry within 2e-2 of the gradient's largest
entry (the gradient with respect to the logits is rounded once to the half dtype, each matmul's output once
more, and the weight gradient once per chunk).
"""

from __future__ import annotations

import pytest
import torch

from fusechat.train.loss import Head, fusion_loss

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# The option sets every half-precision comparison runs over (against fp32, and compiled against eager).
HALF_OPTIONS = pytest.mark.parametrize(
    "options",
    [
        dict(lam=0.9),
        dict(lam=0.0, tail=True),
        dict(lam=1.0),
        dict(lam=0.5, temperature=2.0, chunk_size=7),
        dict(lam=0.3, scale=0.5, softcap=4.0, bias=True, chunk_memory=20_000),
    ],
    ids=["lam0.9", "tail", "clm", "temperature+chunks", "bias+scale+softcap+pieces"],
)


def case(device, n=96, h=64, v=1000, k=10, seed=0, half=torch.bfloat16, bias=False):
    """(hidden, weight, bias, labels, target ids, target logprobs): values representable in `half`."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).to(half)
    weight = (torch.randn(v, h, generator=g) * 3 * h**-0.5).to(half)
    b = (torch.randn(v, generator=g) * 0.1).to(half) if bias else None
    labels = torch.randint(0, v, (n,), generator=g)
    ids = torch.stack([torch.randperm(v, generator=g)[:k] for _ in range(n)])
    ids[::5, -3:] = -1  # padding, as a many-to-one vocabulary map leaves it
    lp = torch.log_softmax(torch.randn(n, k, generator=g) * 2, -1) - 0.3  # 26 % of the mass in the tail
    lp = lp.masked_fill(ids < 0, float("-inf")).half()
    return [t if t is None else t.to(device) for t in (hidden, weight, b, labels, ids, lp)]


def run(hidden, weight, b, labels, ids, lp, dtype, autocast=None, **kw):
    """[loss, grad hidden, grad weight, grad bias] of one forward + backward in `dtype`."""
    hd = hidden.to(dtype).detach().requires_grad_(True)
    w = weight.to(dtype).detach().requires_grad_(True)
    bb = None if b is None else b.to(dtype).detach().requires_grad_(True)
    head = Head(w, bb, scale=kw.pop("scale", 1.0), softcap=kw.pop("softcap", None))
    if autocast is None:
        loss = fusion_loss(hd, head, labels, ids, lp, **kw).loss
    else:
        with torch.autocast(hidden.device.type, dtype=autocast):
            loss = fusion_loss(hd, head, labels, ids, lp, **kw).loss
    loss.backward()
    return [loss.detach()] + [None if t is None else t.grad for t in (hd, w, bb)]


def assert_within_tolerance(got, ref):
    """`got` (from `run`) within the half-precision tolerance of `ref`."""
    torch.testing.assert_close(got[0].double(), ref[0].double(), rtol=1e-5, atol=1e-6)
    for g, r in zip(got[1:], ref[1:], strict=True):
        if r is None:
            assert g is None
            continue
        g, r = g.double(), r.double()
        assert float((g - r).norm() / r.norm()) < 1e-2
        assert float((g - r).abs().max()) < 2e-2 * float(r.abs().max())
