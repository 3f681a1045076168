"""Running a method's compiled kernels on one tensor's raw inputs: the engine's fast path.

`merge_tensor` takes the tensors as read from disk (no fp32 copies), views bf16 as its uint16 bits, runs the
selection passes and the one output pass, and returns the output tensor in its final dtype; it returns None
for what the kernels do not cover (float64 data, VaRM per element, mergekit's low-precision arithmetic), and
the engine then runs the torch function of `methods/` instead. Both give the same values: the tests hold
every kernel equal to its torch function, bit for bit on float32 and bf16 data.

The kernels run on numba's `workqueue` threads unless NUMBA_THREADING_LAYER says otherwise: with the OpenMP
layer (numba's default when libgomp is present) a TIES merge took 23.9 s instead of 9.5 s on this shared
2-core machine, its idle threads spinning against torch's and the reader's and writer's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fusechat.merge.fast import _kernels as K
from fusechat.merge.fast import _select as S
from fusechat.merge.fast import _simple
from fusechat.merge.methods.sce import UNIFORM_BELOW
from fusechat.merge.methods.sparsify import RESCALE_EPS, keep_limit, tensor_key
from fusechat.merge.methods.varm import Granularity, Variation, weights_from_variations

_GTA = {  # method: (sparsify, sign election)
    "task_arithmetic": (K.SPARSE_NONE, False),
    "ties": (K.SPARSE_MAGNITUDE, True),
    "dare_linear": (K.SPARSE_RANDOM, False),
    "dare_ties": (K.SPARSE_RANDOM, True),
}
METHODS = frozenset({*_GTA, "sce", "linear", "slerp", "varm"})


def configure_threads() -> None:
    """Pick numba's workqueue threading layer unless the user chose one (must run before any kernel)."""
    import os

    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def _array(t: torch.Tensor, as_float: bool) -> np.ndarray | None:
    """A flat numpy view the kernels read: bf16 as uint16 bits, float32 as is (fp16 widened); None if float64."""
    if t.dtype == torch.bfloat16 and not as_float:
        return t.reshape(-1).view(torch.int16).numpy().view(np.uint16)
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    if t.dtype != torch.float32:
        return None
    return t.reshape(-1).numpy()


def _arrays(tensors: Sequence[torch.Tensor], input_dtype: torch.dtype | None) -> list[np.ndarray] | None:
    """The inputs as one kernel dtype, each first rounded to the config's `dtype:` as the engine does."""
    tensors = [t.to(input_dtype) if input_dtype is not None and t.dtype != input_dtype else t for t in tensors]
    as_float = any(t.dtype != torch.bfloat16 for t in tensors)
    arrays = [_array(t, as_float) for t in tensors]
    return None if any(a is None for a in arrays) else arrays


def merge_tensor(
    method: str,
    name: str,
    base: torch.Tensor | None,
    inputs: list[torch.Tensor],
    shared: dict[str, Any],
    per_model: list[dict[str, Any]],
    seed: int,
    input_dtype: torch.dtype | None,
    out_dtype: torch.dtype,
    group_weights: list[float] | None = None,
    alloc: Callable[[int], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[float] | None] | None:
    """The merged tensor (out_dtype, the inputs' shape) and VaRM's weights, or None to use the torch path.

    `alloc(nbytes)` gives the output's uint8 buffer for bf16 and float32 outputs (a new one by default).
    """
    if method not in METHODS or out_dtype not in (torch.bfloat16, torch.float32, torch.float16):
        return None
    if method == "varm" and Granularity(shared["granularity"]) is Granularity.ELEMENT:
        return None
    arrays = _arrays(([base] if base is not None else []) + inputs, input_dtype)
    if arrays is None:
        return None
    shape = inputs[0].shape
    kernel_dtype = torch.bfloat16 if out_dtype == torch.bfloat16 else torch.float32
    if alloc is not None and kernel_dtype == out_dtype:
        numel = inputs[0].numel()
        out = alloc(numel * kernel_dtype.itemsize).view(kernel_dtype).reshape(shape)
    else:
        out = torch.empty(shape, dtype=kernel_dtype)
    flat_out = _array(out, False)
    weights = None
    if method in _GTA:
        _gta(method, name, arrays[0], tuple(arrays[1:]), shared, per_model, seed, flat_out)
    elif method == "sce":
        _sce(arrays[0], tuple(arrays[1:]), shared["select_topk"], flat_out)
    elif method == "linear":
        w = [p["weight"] for p in per_model]
        if shared["normalize"] and abs(sum(w)) < 1e-12:
            raise ValueError(f"{name}: the weights sum to 0, cannot normalise; set normalize: false")
        _simple.weighted_sum(tuple(arrays), w, float(sum(w)) if shared["normalize"] else None, flat_out)
    elif method == "slerp":
        _simple.slerp(arrays[0], arrays[1], shared["t"], flat_out)
    else:
        weights = group_weights
        if weights is None:
            measure = Variation(shared["variation"])
            weights = weights_from_variations(_simple.variation_sums(arrays[0], tuple(arrays[1:]), measure))
        _simple.weighted_sum(tuple(arrays[1:]), weights, None, flat_out)
    return (out if out.dtype == out_dtype else out.to(out_dtype)), weights


def _gta(method, name, base, xs, shared, per_model, seed, out) -> None:
    sparsify, elect = _GTA[method]
    n, size = len(xs), base.size
    chunks = S.n_chunks(size)
    weights = [float(p["weight"]) for p in per_model]
    densities = [float(p.get("density", 1.0)) for p in per_model]
    active = np.array([sparsify != K.SPARSE_NONE and d < 1 and size > 0 for d in densities])
    thresholds = np.zeros(n, dtype=np.uint32)
    cuts = np.zeros(n, dtype=np.int64)
    keys = np.zeros((n, 2), dtype=np.uint64)
    limits = np.zeros(n, dtype=np.uint64)
    scales = np.ones(n, dtype=np.float32)
    rescale = bool(shared.get("rescale", False))
    if sparsify == K.SPARSE_MAGNITUDE and active.any():
        ks = [max(1, int(d * size)) for d in densities]
        active &= np.array([k < size for k in ks])
        hist = np.zeros((chunks, n, S.HIGH), dtype=np.int32)
        abs_sums = np.zeros((chunks, n))
        S.magnitude_high(base, xs, active, rescale, hist, abs_sums)
        totals = hist.sum(axis=0, dtype=np.int64)
        found = [S.high_bucket(totals[i], ks[i]) if active[i] else (0, 0) for i in range(n)]
        low = np.zeros((chunks, n, S.LOW), dtype=np.int32)
        S.magnitude_low(base, xs, active, np.array([b for b, _ in found], dtype=np.uint32), low)
        for i in range(n):
            if active[i]:
                t, needed, equal = S.threshold(low[:, i], *found[i], ks[i])
                thresholds[i] = t
                cuts[i] = S.cut_index(
                    equal, needed, size, lambda start, m, x=xs[i], t=t: S.nth_equal_magnitude(base, x, t, start, m)
                )
        if rescale:
            kept = np.zeros((chunks, n))
            S.magnitude_kept_abs(base, xs, active, thresholds, cuts, kept)
            scales[:] = _scales(abs_sums.sum(axis=0), kept.sum(axis=0), active)
    elif sparsify == K.SPARSE_RANDOM and active.any():
        for i in range(n):
            keys[i] = tensor_key(seed, name, i)
            limits[i] = keep_limit(densities[i])
        if rescale:
            before, after = np.zeros((chunks, n)), np.zeros((chunks, n))
            S.random_abs_sums(base, xs, active, keys, limits, before, after)
            scales[:] = _scales(before.sum(axis=0), after.sum(axis=0), active)
    total = float(sum(weights))
    K.gta(
        base,
        xs,
        sparsify,
        active,
        thresholds,
        cuts,
        keys,
        limits,
        scales,
        np.array(weights, dtype=np.float32),
        elect,
        bool(shared["normalize"]),
        np.float32(total if abs(total) >= 1e-8 else 1.0),
        np.float32(shared["lambda"]),
        out,
    )


def _scales(before: np.ndarray, after: np.ndarray, active: np.ndarray) -> np.ndarray:
    """The L1-restoring factor per input (1 where skipped: inactive, or a norm below RESCALE_EPS)."""
    ok = active & (before >= RESCALE_EPS) & (after >= RESCALE_EPS)
    return np.where(ok, before / np.where(ok, after, 1.0), 1.0).astype(np.float32)


def _sce(base, xs, select_topk, out) -> None:
    n, size = len(xs), base.size
    chunks = S.n_chunks(size)
    mode, thr, cut = 0, np.uint32(0), 0
    if select_topk <= 0:
        mode = 2
    elif select_topk < 1:
        hist = np.zeros((chunks, S.HIGH), dtype=np.int32)
        nonzero = np.zeros(chunks, dtype=np.int64)
        K.variance_high(base, xs, hist, nonzero)
        k = int(int(nonzero.sum()) * select_topk)
        if k <= 0:
            mode = 2
        elif k < size:
            mode = 1
            bucket, n_above = S.high_bucket(hist.sum(axis=0, dtype=np.int64), k)
            low = np.zeros((chunks, S.LOW), dtype=np.int32)
            K.variance_low(base, xs, np.uint32(bucket), low)
            t, needed, equal = S.threshold(low, bucket, n_above, k)
            thr = np.uint32(t)
            cut = S.cut_index(equal, needed, size, lambda start, m: K.nth_equal_variance(base, xs, thr, start, m))
    sums = np.zeros((chunks, n))
    K.sce_energies(base, xs, mode, thr, cut, sums)
    energies = [float(e) / max(size, 1) for e in sums.sum(axis=0)]
    total = sum(energies)
    weights = [e / total for e in energies] if abs(total) >= UNIFORM_BELOW else [1.0 / n] * n
    K.sce_merge(base, xs, mode, thr, cut, np.array(weights, dtype=np.float32), out)
