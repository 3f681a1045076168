"""Running a method's compiled kernels on one tensor's raw inputs: the engine's fast path.

`merge_tensor` takes the arrays as read from disk (no fp32 copies; bf16 as its uint16 bits, see
merge/dtypes.py), runs the selection passes and the one output pass, and returns the output array in its
final dtype; it returns None for what the kernels do not cover (float64 data, VaRM per element, mergekit's
low-precision arithmetic), and the engine then runs the torch function of `methods/` instead. Both give the
same values: the tests hold every kernel equal to its torch function, bit for bit on float32 and bf16 data.

The kernels run on numba's `workqueue` threads unless NUMBA_THREADING_LAYER says otherwise: with the OpenMP
layer (numba's default when libgomp is present) idle threads spin against torch's and the reader's and
writer's, which made a TIES merge more than twice as slow on a 2-core machine (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fusechat.merge import dtypes
from fusechat.merge.dtypes import convert, to_float32
from fusechat.merge.fast import _kernels as K
from fusechat.merge.fast import _select as S
from fusechat.merge.fast import _simple

if TYPE_CHECKING:
    from fusechat.merge.registry import MethodSpec
from fusechat.merge.job import TensorJob
from fusechat.merge.methods.rules import (
    RESCALE_EPS,
    UNIFORM_BELOW,
    Granularity,
    Sparsify,
    Variation,
    keep_limit,
    linear_weights,
    tensor_key,
    weights_from_variations,
)

_SPARSIFY = {Sparsify.NONE: K.SPARSE_NONE, Sparsify.MAGNITUDE: K.SPARSE_MAGNITUDE, Sparsify.RANDOM: K.SPARSE_RANDOM}
Output = Callable[[], np.ndarray]  # makes the flat output buffer, once a driver knows it covers the tensor


def configure_threads() -> None:
    """Pick numba's workqueue threading layer unless the user chose one (must run before any kernel)."""
    import os

    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def _arrays(arrays: Sequence[np.ndarray], codes: Sequence[str], input_code: str | None) -> list[np.ndarray] | None:
    """The inputs flat, as one kernel dtype (bf16 bits, or float32 when any input is not bf16), each first
    rounded to the config's `dtype:` as the engine does; None for float64 (the torch path's)."""
    if input_code == "F64" or "F64" in codes:
        return None
    pairs = [
        (convert(a, c, input_code), input_code) if input_code else (a, c) for a, c in zip(arrays, codes, strict=True)
    ]
    as_float = any(c != "BF16" for _, c in pairs)
    return [(to_float32(a, c) if as_float else a).reshape(-1) for a, c in pairs]


def merge_tensor(
    spec: MethodSpec,
    job: TensorJob,
    input_code: str | None,
    out_code: str,
    alloc: Callable[[int], np.ndarray] | None = None,
) -> tuple[np.ndarray, list[float] | None] | None:
    """The merged array (out_code, the inputs' shape) and VaRM's weights, or None to use the torch path.

    `job` holds the arrays as read, `job.codes` their dtype codes (base first). `alloc(nbytes)` gives the
    output's uint8 buffer for bf16 and float32 outputs (a new one by default).
    """
    driver = spec.kernel_function()
    if driver is None or out_code not in ("BF16", "F32", "F16"):
        return None
    arrays = _arrays(([job.base] if job.base is not None else []) + list(job.inputs), job.codes, input_code)
    if arrays is None:
        return None
    shape = job.inputs[0].shape
    kernel_code = "BF16" if out_code == "BF16" else "F32"
    made: list[np.ndarray] = []

    def output() -> np.ndarray:
        numel = arrays[0].size
        if alloc is not None and kernel_code == out_code:
            out = dtypes.view(alloc(numel * dtypes.itemsize(kernel_code)), kernel_code, shape)
        else:
            out = np.empty(shape, dtype=dtypes.NUMPY[kernel_code])
        made.append(out)
        return out.reshape(-1)

    covered = driver(job, arrays, output, **spec.options)
    if covered is None:
        return None
    out = made[0]
    return (out if kernel_code == out_code else dtypes.convert(out, kernel_code, out_code)), covered[1]


# The drivers the registry names as kernels: each returns (True, VaRM's weights or None) once it has written
# `output()`, or None when its kernels do not cover this tensor (the torch function runs instead).


def linear(job: TensorJob, arrays: list[np.ndarray], output: Output) -> tuple[bool, None]:
    w = linear_weights(job)
    _simple.weighted_sum(tuple(arrays), w, float(sum(w)) if job.shared["normalize"] else None, output())
    return True, None


def slerp(job: TensorJob, arrays: list[np.ndarray], output: Output) -> tuple[bool, None]:
    _simple.slerp(arrays[0], arrays[1], job.shared["t"], output())
    return True, None


def varm(job: TensorJob, arrays: list[np.ndarray], output: Output) -> tuple[bool, list[float]] | None:
    if Granularity(job.shared["granularity"]) is Granularity.ELEMENT:
        return None
    weights = job.group_weights
    if weights is None:
        measure = Variation(job.shared["variation"])
        weights = weights_from_variations(_simple.variation_sums(arrays[0], tuple(arrays[1:]), measure))
    _simple.weighted_sum(tuple(arrays[1:]), weights, None, output())
    return True, weights


def sce(job: TensorJob, arrays: list[np.ndarray], output: Output) -> tuple[bool, None]:
    _sce(arrays[0], tuple(arrays[1:]), job.shared["select_topk"], output())
    return True, None


def gta(
    job: TensorJob, arrays: list[np.ndarray], output: Output, sparsify: Sparsify, sign_election: bool
) -> tuple[bool, None]:
    _gta(_SPARSIFY[sparsify], sign_election, job, arrays[0], tuple(arrays[1:]), output())
    return True, None


def warm_up(spec: MethodSpec, job: TensorJob, input_code: str | None, out_code: str) -> None:
    """Load the kernels a tensor like `job` (its dtypes and parameters) runs, from numba's cache or compiled, by
    merging a 64-entry stand-in of it. The engine calls this on a thread of its own while the first tensors are
    read, so the disk works while the kernels load. A failure is left for the real tensor to raise."""
    arrays = [np.zeros(64, dtype=dtypes.NUMPY[c]) for c in job.codes]
    base = arrays.pop(0) if job.base is not None else None
    try:
        merge_tensor(spec, dataclasses.replace(job, base=base, inputs=arrays, seed=0), input_code, out_code)
    except Exception:  # noqa: BLE001 - the real tensor raises it, with the engine's context
        pass


def variation_sums(
    base: np.ndarray, inputs: list[np.ndarray], codes: Sequence[str], input_code: str | None, measure: Variation
) -> list[float] | None:
    """VaRM's Σ Δ² (or Σ |Δ|) of each input against the base, or None when the kernels do not cover the data."""
    arrays = _arrays([base, *inputs], codes, input_code)
    return None if arrays is None else _simple.variation_sums(arrays[0], tuple(arrays[1:]), measure)


def _gta(sparsify: int, elect: bool, job: TensorJob, base, xs, out) -> None:
    name, shared, per_model, seed = job.name, job.shared, job.per_model, job.seed
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
        hist = _scratch((chunks, n, S.KEYS))  # zeroed by the pass, per active input
        abs_sums = np.zeros((chunks, n))
        S.magnitude_high(base, xs, active, rescale, hist, abs_sums)
        ties: dict[int, tuple[int, int, np.ndarray]] = {}  # input → (T, kept entries equal to T, per chunk)
        found: dict[int, tuple[int, int]] = {}  # input → (bucket, entries above it): T needs pass two
        buckets = np.zeros(n, dtype=np.uint32)
        for i in np.flatnonzero(active):
            counts = hist[:, i].sum(axis=0, dtype=np.int64)
            bucket, n_above, floor = S.bucket_floor(counts, ks[i])
            if floor is None:
                buckets[i], found[i] = bucket, (bucket, n_above)
            else:  # the k-th largest is the bucket's lowest value: those equal to it are the zero-low-bit keys
                n_greater = n_above + int(counts[2 * bucket + 1])
                ties[i] = (floor, ks[i] - n_greater, hist[:, i, 2 * bucket].astype(np.int64))
        if found:
            low = _scratch((chunks, n, S.LOW), slot=1)
            S.magnitude_low(base, xs, np.isin(np.arange(n), list(found)), buckets, low)
            for i, (bucket, n_above) in found.items():
                ties[i] = S.threshold(low[:, i], bucket, n_above, ks[i])
        for i, (t, needed, equal) in ties.items():
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


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...], slot: int = 0) -> np.ndarray:
    """An int32 array of `shape`, uninitialised, in memory kept between tensors (one per slot and thread).

    Fresh histograms cost a page fault per 4 KiB and a read of every page to sum them: 0.3 s of a 500M TIES
    merge's main thread here, the pages reused from tensor to tensor instead.
    """
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    n = int(np.prod(shape))
    buf = buffers.get(slot)
    if buf is None or buf.size < n:
        buf = buffers[slot] = np.empty(n, dtype=np.int32)
    return buf[:n].reshape(shape)


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
        hist = _scratch((chunks, S.HIGH))  # zeroed by the pass
        nonzero = np.zeros(chunks, dtype=np.int64)
        K.variance_high(base, xs, hist, nonzero)
        k = int(int(nonzero.sum()) * select_topk)
        if k <= 0:
            mode = 2
        elif k < size:
            mode = 1
            bucket, n_above = S.high_bucket(hist.sum(axis=0, dtype=np.int64), k)
            low = _scratch((chunks, S.LOW), slot=1)
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
