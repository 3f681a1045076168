"""The loss's half-precision path (bf16/fp16 matmuls, fp32 statistics) against the fp32 reference.

Stated tolerance, for inputs already representable in the half dtype (so only the loss's own rounding shows):
the loss within 1e-5 relative (the logits are fp32 from fp32-accumulated products, the statistics fp32);
each gradient within 1e-2 relative error (Frobenius norm) and every entry within 2e-2 of the gradient's
largest entry (the gradient with respect to the logits is rounded once to the half dtype, each matmul's
output once more, and the weight gradient once per chunk). Measured on CPU: 0.25-0.4 % and 0.4-1.1 %.
Runs on CUDA too where one is present (`benchmarks/gpu_check.sh`): there the logits come from the
fp32-output GEMM.
"""

from __future__ import annotations

import pytest
import torch

from fusechat.train.chunked import chunk_rows
from fusechat.train.loss import Head, fusion_loss

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def case(device, n=96, h=64, v=1000, k=10, seed=0, half=torch.bfloat16, bias=False):
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
    torch.testing.assert_close(got[0].double(), ref[0].double(), rtol=1e-5, atol=1e-6)
    for g, r in zip(got[1:], ref[1:], strict=True):
        if r is None:
            assert g is None
            continue
        g, r = g.double(), r.double()
        assert float((g - r).norm() / r.norm()) < 1e-2
        assert float((g - r).abs().max()) < 2e-2 * float(r.abs().max())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
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
def test_half_inputs_match_the_fp32_reference(device, half, options):
    options = dict(options)
    data = case(device, half=half, bias=options.pop("bias", False))
    if options.get("lam") == 1.0:
        data[4] = data[5] = None
    ref = run(*data, torch.float32, **dict(options))
    got = run(*data, half, **options)
    assert got[1].dtype == half and got[2].dtype == half
    assert_within_tolerance(got, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_runs_the_matmuls_in_bf16_and_returns_fp32_gradients(device):
    """The trainer's bf16 mode: fp32 weights and hidden states inside autocast."""
    data = case(device, seed=1)
    ref = run(*data, torch.float32, lam=0.7)
    got = run(*data, torch.float32, autocast=torch.bfloat16, lam=0.7)
    assert got[1].dtype == torch.float32 and got[2].dtype == torch.float32
    assert_within_tolerance(got, ref)
    assert not torch.equal(got[2], ref[2])  # the matmuls did run in bf16


def test_pieces_and_chunks_from_the_memory_budget():
    # full precision: the piece is the chunk, 2**23 logits in 32 MiB
    assert chunk_rows(32 << 20, 1 << 13, torch.float32) == (1024, 1024)
    # bf16: a quarter of the budget for the fp32 piece, the rest for the bf16 gradient of the chunk
    chunk, piece = chunk_rows(32 << 20, 1 << 13, torch.bfloat16)
    assert piece == 256 and chunk == (24 << 20) // (2 << 13)
    assert chunk_rows(10, 1 << 13, torch.bfloat16) == (1, 1)  # never zero rows


def test_memory_budget_does_not_change_the_fp32_result():
    data = case("cpu", seed=2, half=torch.float32)
    a = run(*data, torch.float32, lam=0.6, tail=True)
    b = run(*data, torch.float32, lam=0.6, tail=True, chunk_memory=3 * 4 * 1000)  # 3 rows a chunk
    for x, y in zip(a, b, strict=True):
        if x is not None:
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
