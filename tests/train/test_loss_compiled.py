"""The compiled elementwise path of the loss (`kernel="compiled"`, src/fusechat/train/fused.py) against the eager
one, its reference: in fp32 equal to float rounding (1e-5 relative, 1e-6 of the largest entry), in bf16/fp16
within the stated half-precision tolerance of the fp32 reference (tests/train/loss_cases.py), with temperature,
soft-cap, scale, bias, the tail bucket and uneven last chunks and pieces; no recompilation when the piece size
changes; and the fallback to eager, with one warning, when compilation fails.

Compiling costs seconds a graph on CPU (each option combination is a graph): the fast tests share the
process's one compiled function and use three graphs; the full matrix is marked slow.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch._dynamo.utils import counters

from fusechat.train import fused
from tests.train.loss_cases import DEVICES, HALF_OPTIONS, assert_within_tolerance, case, run

FP32_OPTIONS = {
    "temperature+softcap+scale+bias, uneven chunks": dict(
        lam=0.5, temperature=2.0, scale=0.5, softcap=4.0, bias=True, chunk_size=7
    ),
    "tail, uneven chunks": dict(lam=0.6, tail=True, chunk_size=10),  # k = 10: the same size as a piece
}
# bf16: pieces of 9 rows in chunks of 57 (96 rows: the last chunk 39 rows; each chunk's last piece 3 rows)
BF16_TAIL = dict(lam=0.6, tail=True, chunk_memory=150_000)


@pytest.fixture(scope="module")
def compiled():
    """The process's compiled function, fresh for this module (no failure left by another test), and a check
    after each use that it really ran: a fallback to eager would make every comparison here trivially pass."""
    fused.reset()
    yield
    fused.reset()


def both(device, dtype, options, seed=0):
    options = dict(options)
    data = case(device, seed=seed, half=dtype, bias=options.pop("bias", False))
    if options.get("lam") == 1.0:
        data[4] = data[5] = None
    eager = run(*data, dtype, kernel="eager", **dict(options))
    fast = run(*data, dtype, kernel="compiled", **dict(options))
    assert fused.compiled_in_use(), "the compiled path fell back to eager"
    return data, eager, fast


def assert_fp32_close(got, ref):
    for g, r in zip(got, ref, strict=True):
        if r is None:
            assert g is None
            continue
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6 * float(r.abs().max()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "options",
    [
        FP32_OPTIONS["temperature+softcap+scale+bias, uneven chunks"],
        pytest.param(FP32_OPTIONS["tail, uneven chunks"], marks=pytest.mark.slow),  # bf16 below covers the tail
    ],
    ids=FP32_OPTIONS.keys(),
)
def test_fp32_compiled_equals_eager(compiled, device, options):
    _, eager, fast = both(device, torch.float32, options)
    assert_fp32_close(fast, eager)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_compiled_within_the_half_tolerance(compiled, device):
    """The GPU's case: the gradient written in bf16 into a chunk buffer, piece by piece, apart from the fp32
    logits; the tail bucket's mask and sums too."""
    data, eager, fast = both(device, torch.bfloat16, BF16_TAIL)
    ref = run(*data, torch.float32, kernel="eager", **BF16_TAIL)
    assert_within_tolerance(fast, ref)
    assert_within_tolerance(fast, eager)


def test_no_recompilation_when_the_piece_size_changes(compiled):
    """Sizes, offsets and floats are symbolic (fused._CONFIG): neither a new piece size, a 1-row piece, a piece
    at offset 0 or elsewhere in the chunk's buffer, a size equal to k by chance, nor another normalizer (the
    trainer's changes every batch) compiles a new graph."""
    both("cpu", torch.bfloat16, BF16_TAIL)  # compiled (or found) already: this graph exists
    graphs = counters["stats"]["unique_graphs"]
    for budget in (80_000, 220_000, 400_000):  # pieces of 1 and 5, 6, 12 and 13, 21 and 25 rows
        options = dict(BF16_TAIL, chunk_memory=budget, normalizer=budget / 1000)
        data, eager, fast = both("cpu", torch.bfloat16, options, seed=budget)
        assert_within_tolerance(fast, eager)
    assert counters["stats"]["unique_graphs"] == graphs


def test_a_failed_compilation_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    def refuse(gm, example_inputs):
        raise RuntimeError("no C++ compiler here")

    fused.reset()
    monkeypatch.setattr(fused, "_compile", lambda: torch.compile(fused._terms, backend=refuse, fullgraph=True))
    try:
        with caplog.at_level(logging.WARNING, logger=fused.__name__):
            data = case("cpu", half=torch.float32)
            ref = run(*data, torch.float32, kernel="eager", lam=0.7, chunk_size=9)
            got = run(*data, torch.float32, kernel="compiled", lam=0.7, chunk_size=9)
            again = run(*data, torch.float32, kernel="compiled", lam=0.7, chunk_size=9)
        assert fused.failed()
        for a, b in zip(got + again, ref + ref, strict=True):
            assert (a is None and b is None) or torch.equal(a, b)
        warnings = [r for r in caplog.records if r.name == fused.__name__]
        assert len(warnings) == 1 and "(RuntimeError: no C++ compiler here)" in warnings[0].getMessage()
        assert warnings[0].getMessage().count("\n") == 0
    finally:
        fused.reset()


def test_kernel_option():
    assert fused.use_compiled("auto", torch.device("cuda"))
    assert not fused.use_compiled("auto", torch.device("cpu"))  # measured not faster on CPU
    assert fused.use_compiled("compiled", torch.device("cpu"))
    assert not fused.use_compiled("eager", torch.device("cuda"))
    data = case("cpu", half=torch.float32)
    with pytest.raises(ValueError, match="loss kernel must be one of auto, compiled, eager"):
        run(*data, torch.float32, kernel="triton")


def test_the_trainer_loss_passes_the_kernel_on(compiled, tiny):
    """`LossConfig.kernel` (set by `--loss-kernel` / `train(loss_kernel=...)`) reaches the loss: the tiny
    pivot's batch gives the eager gradients through the compiled path."""
    from fusechat.models.load import load_model
    from fusechat.store.format import TopKStore
    from fusechat.train.data import FusionCollator, TargetsDataset
    from fusechat.train.trainer import LossConfig, step_loss

    model = load_model(tiny["pivot"])
    dataset = TargetsDataset(TopKStore(tiny["targets"]))
    batch = FusionCollator(pad_id=0)([dataset[i] for i in (0, 1, 2)])
    grads = []
    fused.reset()
    for kernel in ("eager", "compiled"):
        model.zero_grad()
        step_loss(model, batch, LossConfig(lam=0.7, chunk_size=16, kernel=kernel), normalizer=10.0).loss.backward()
        assert fused.compiled_in_use() == (kernel == "compiled")
        grads.append([p.grad.clone() for p in model.parameters()])
    assert_fp32_close(grads[1], grads[0])


def test_an_unknown_kernel_is_refused_before_any_work(tiny, tmp_path):
    from fusechat.errors import FusechatError
    from fusechat.train.api import train

    with pytest.raises(FusechatError, match="loss-kernel"):
        train(tiny["pivot"], tiny["targets"], tmp_path / "out", loss_kernel="triton")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_fp64_compiled_equals_eager(compiled):
    """fp64 inputs (the dense-reference tests' dtype) through the compiled path: equal to float64 rounding."""
    data = [t if t is None or not t.is_floating_point() else t.double() for t in case("cpu", half=torch.float32)]
    data[5] = data[5].half()  # target logprobs as the store holds them
    options = dict(lam=0.4, temperature=2.0, scale=0.7, softcap=3.0, chunk_size=7)
    eager = run(*data, torch.float64, kernel="eager", **options)
    fast = run(*data, torch.float64, kernel="compiled", **options)
    for g, r in zip(fast, eager, strict=True):
        if r is not None:
            torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-13 * float(r.abs().max()))


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
@HALF_OPTIONS
def test_half_compiled_matrix(compiled, device, half, options):
    options = dict(options)
    bias = options.pop("bias", False)
    data, eager, fast = both(device, half, dict(options, bias=bias))
    ref = run(*data, torch.float32, kernel="eager", **options)
    assert_within_tolerance(fast, ref)
    assert_within_tolerance(fast, eager)
