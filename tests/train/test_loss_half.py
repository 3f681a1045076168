"""The loss's half-precision path (bf16/fp16 matmuls, fp32 statistics) against the fp32 reference.

Stated tolerance (`tests/train/loss_cases.py`, where it is explained): the loss within 1e-5 relative, each
gradient within 1e-2 relative error (Frobenius norm) and every entry within 2e-2 of the gradient's largest
entry. Measured on CPU: 0.25-0.4 % and 0.4-1.1 %. Runs on CUDA too where one is present
(`benchmarks/gpu_check.sh`): there the logits come from the fp32-output GEMM, and the default `kernel="auto"`
runs each piece's elementwise work compiled (tests/train/test_loss_compiled.py covers that path on CPU).
"""

from __future__ import annotations

import pytest
import torch

from fusechat.train.chunked import chunk_rows
from tests.train.loss_cases import DEVICES, HALF_OPTIONS, assert_within_tolerance, case, run


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
@HALF_OPTIONS
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
