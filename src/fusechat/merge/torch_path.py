"""The torch functions of `methods/` adapted to the engine's per-tensor jobs: the reference path.

The engine runs a method's compiled kernels (`fast/`) when they cover the tensor and these otherwise (float64
data, VaRM per element, `--mergekit-arithmetic`, or `compiled=False`); the tests hold the two equal. Kept
apart from `registry.py` so that listing and validating methods, and the fast path, never import torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from fusechat.merge.dtypes import TORCH_NAMES, from_torch, to_torch
from fusechat.merge.methods.linear import linear
from fusechat.merge.methods.rules import Granularity, Sparsify, Variation, tensor_key
from fusechat.merge.methods.sce import sce
from fusechat.merge.methods.slerp import slerp
from fusechat.merge.methods.task_arithmetic import task_arithmetic
from fusechat.merge.methods.varm import variation_sum, varm, varm_element, varm_matrix
from fusechat.merge.registry import MethodSpec, TensorJob


def _linear(job: TensorJob) -> tuple[torch.Tensor, None]:
    weights = [p["weight"] for p in job.per_model]
    if job.shared["normalize"] and abs(sum(weights)) < 1e-12:
        raise ValueError(f"{job.name}: the weights sum to 0, cannot normalise; set normalize: false")
    return linear(job.inputs, weights, job.shared["normalize"]), None


def _slerp(job: TensorJob) -> tuple[torch.Tensor, None]:
    return slerp(job.base, job.inputs[0], job.shared["t"]), None


def _gta(sparsify: Sparsify, sign_election: bool) -> Callable[[TensorJob], tuple[torch.Tensor, None]]:
    def run(job: TensorJob) -> tuple[torch.Tensor, None]:
        keys = None
        if sparsify is Sparsify.RANDOM:
            keys = [tensor_key(job.seed, job.name, i) for i in range(len(job.inputs))]
        out = task_arithmetic(
            job.base,
            job.inputs,
            [p["weight"] for p in job.per_model],
            densities=[p.get("density", 1.0) for p in job.per_model],
            sparsify=sparsify,
            sign_election=sign_election,
            normalize=job.shared["normalize"],
            rescale=job.shared.get("rescale", False),
            lambda_=job.shared["lambda"],
            keys=keys,
            consume=job.consume,
        )
        return out, None

    return run


def _sce(job: TensorJob) -> tuple[torch.Tensor, None]:
    return sce(job.base, job.inputs, job.shared["select_topk"], consume=job.consume), None


def _varm(job: TensorJob) -> tuple[torch.Tensor, list[float]]:
    measure = Variation(job.shared["variation"])
    granularity = Granularity(job.shared["granularity"])
    if granularity is Granularity.ELEMENT:
        return varm_element(job.base, job.inputs, measure)
    if granularity is Granularity.MATRIX:
        return varm_matrix(job.base, job.inputs, measure)
    if job.group_weights is None:
        raise ValueError(f"{job.name}: VaRM at {granularity.value} granularity needs its group's weights")
    return varm(job.inputs, job.group_weights), job.group_weights


FUNCTIONS: dict[str, Callable[[TensorJob], tuple[torch.Tensor, list[float] | None]]] = {
    "linear": _linear,
    "slerp": _slerp,
    "task_arithmetic": _gta(Sparsify.NONE, False),
    "ties": _gta(Sparsify.MAGNITUDE, True),
    "dare_linear": _gta(Sparsify.RANDOM, False),
    "dare_ties": _gta(Sparsify.RANDOM, True),
    "sce": _sce,
    "varm": _varm,
}


def _dtype(code: str) -> torch.dtype:
    return getattr(torch, TORCH_NAMES[code])


def _prepare(a: np.ndarray, code: str, input_code: str | None, compute: torch.dtype) -> torch.Tensor:
    """A working copy of an input (its own memory): rounded to the config's `dtype:` as mergekit loads it, then
    widened to the compute dtype (float64 data stays float64)."""
    t = to_torch(a, code)
    if input_code is not None and code != input_code:
        t = t.to(_dtype(input_code))
    return t.to(torch.float64 if t.dtype == torch.float64 else compute, copy=True)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_job(
    spec: MethodSpec,
    name: str,
    base: np.ndarray | None,
    inputs: list[np.ndarray],
    codes: Sequence[str],
    shared: dict[str, Any],
    per_model: list[dict[str, Any]],
    seed: int,
    group_weights: list[float] | None,
    input_code: str | None,
    compute_code: str | None,
    out_code: str,
    threads: int = 1,
) -> tuple[np.ndarray, list[float] | None]:
    """One tensor merged by the method's torch function, from and to numpy arrays (`codes`: base first).

    `compute_code` is mergekit's low-precision arithmetic (the config's dtype), else float32. The result is
    rounded to `out_code`; the inputs are copied, so their buffers may be reused as soon as this returns.
    """
    compute = _dtype(compute_code) if compute_code else torch.float32
    arrays = ([base] if base is not None else []) + inputs
    tensors = [_prepare(a, c, input_code, compute) for a, c in zip(arrays, codes, strict=True)]
    base_t = tensors.pop(0) if base is not None else None
    job = TensorJob(name, base_t, tensors, shared, per_model, seed, group_weights, True)
    with _threads(threads):
        result, weights = spec.merge(job)
    return from_torch(result.to(_dtype(out_code)))[0], weights


def variation_sums(
    base: np.ndarray, inputs: list[np.ndarray], codes: Sequence[str], input_code: str | None, measure: Variation
) -> list[float]:
    """VaRM's Σ Δ² (or Σ |Δ|) of each input against the base, in float64 (the kernels' fallback)."""
    b = _prepare(base, codes[0], input_code, torch.float32)
    return [
        variation_sum(_prepare(x, c, input_code, torch.float32) - b, measure)
        for x, c in zip(inputs, codes[1:], strict=True)
    ]
