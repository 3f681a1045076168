"""The torch functions of `methods/` adapted to the engine's per-tensor jobs: the reference path.

The engine runs a method's compiled kernels (`fast/`) when they cover the tensor and these otherwise (float64
data, VaRM per element, `--mergekit-arithmetic`, or `compiled=False`); the tests hold the two equal. The
registry names these adapters by reference (`MethodSpec.reference`), so listing and validating methods, and the
fast path, never import torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from fusechat.merge.dtypes import TORCH_NAMES, from_torch, to_torch
from fusechat.merge.job import TensorJob
from fusechat.merge.methods import linear as linear_
from fusechat.merge.methods import sce as sce_
from fusechat.merge.methods import slerp as slerp_
from fusechat.merge.methods import varm as varm_
from fusechat.merge.methods.rules import Granularity, Sparsify, Variation, linear_weights, tensor_key
from fusechat.merge.methods.task_arithmetic import task_arithmetic

if TYPE_CHECKING:
    from fusechat.merge.registry import MethodSpec


def linear(job: TensorJob) -> tuple[torch.Tensor, None]:
    return linear_.linear(job.inputs, linear_weights(job), job.shared["normalize"]), None


def slerp(job: TensorJob) -> tuple[torch.Tensor, None]:
    return slerp_.slerp(job.base, job.inputs[0], job.shared["t"]), None


def gta(job: TensorJob, sparsify: Sparsify, sign_election: bool) -> tuple[torch.Tensor, None]:
    """The task-vector family (task arithmetic, TIES, DARE), its member chosen by the two options."""
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


def sce(job: TensorJob) -> tuple[torch.Tensor, None]:
    return sce_.sce(job.base, job.inputs, job.shared["select_topk"], consume=job.consume), None


def varm(job: TensorJob) -> tuple[torch.Tensor, list[float]]:
    measure = Variation(job.shared["variation"])
    granularity = Granularity(job.shared["granularity"])
    if granularity is Granularity.ELEMENT:
        return varm_.varm_element(job.base, job.inputs, measure)
    if granularity is Granularity.MATRIX:
        return varm_.varm_matrix(job.base, job.inputs, measure)
    if job.group_weights is None:
        raise ValueError(f"{job.name}: VaRM at {granularity.value} granularity needs its group's weights")
    return varm_.varm(job.inputs, job.group_weights), job.group_weights


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


def run(spec: MethodSpec, job: TensorJob) -> tuple[torch.Tensor, list[float] | None]:
    """The method's torch function on a job of float tensors."""
    return spec.torch_function()(job, **spec.options)


def run_job(
    spec: MethodSpec,
    job: TensorJob,
    input_code: str | None,
    compute_code: str | None,
    out_code: str,
    threads: int = 1,
) -> tuple[np.ndarray, list[float] | None]:
    """One tensor merged by the method's torch function, from and to numpy arrays (`job.codes`: base first).

    `compute_code` is mergekit's low-precision arithmetic (the config's dtype), else float32. The result is
    rounded to `out_code`; the inputs are copied, so their buffers may be reused as soon as this returns.
    """
    compute = _dtype(compute_code) if compute_code else torch.float32
    arrays = ([job.base] if job.base is not None else []) + list(job.inputs)
    tensors = [_prepare(a, c, input_code, compute) for a, c in zip(arrays, job.codes, strict=True)]
    base_t = tensors.pop(0) if job.base is not None else None
    with _threads(threads):
        result, weights = run(spec, dataclasses.replace(job, base=base_t, inputs=tensors, consume=True))
    return from_torch(result.to(_dtype(out_code)))[0], weights


def variation_sums(
    base: np.ndarray, inputs: list[np.ndarray], codes: Sequence[str], input_code: str | None, measure: Variation
) -> list[float]:
    """VaRM's Σ Δ² (or Σ |Δ|) of each input against the base, in float64 (the kernels' fallback)."""
    b = _prepare(base, codes[0], input_code, torch.float32)
    return [
        varm_.variation_sum(_prepare(x, c, input_code, torch.float32) - b, measure)
        for x, c in zip(inputs, codes[1:], strict=True)
    ]
