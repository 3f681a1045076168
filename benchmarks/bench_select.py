"""The k-th largest |x − base| of one tensor: the compiled radix selection (merge/fast/_select.py) against the
torch reference (merge/methods/select.py, `torch.kthvalue`), side by side in one process.

Inputs: a 4096 × 4096 float32 task vector (16.8M entries, the size of a 7B model's attention projection), as
differences of bf16 numbers (as in real bf16 checkpoints: one histogram pass usually finds the threshold) and of
full float32 numbers (a second pass over the low bits is needed). Both paths must give the same threshold.
Prints the best and median of `--repeat` alternating runs per path and their ratio.

    nice python benchmarks/bench_select.py [--repeat 5] [--density 0.5] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from fusechat.merge.fast import _select as S
from fusechat.merge.methods.select import kth_largest

N = 4096 * 4096


def radix(base: np.ndarray, x: np.ndarray, k: int) -> int:
    """The k-th largest |x − base|'s float32 bits, as the TIES kernel driver finds it (fast/run.py)."""
    chunks = S.n_chunks(base.size)
    active = np.array([True])
    hist = np.empty((chunks, 1, S.KEYS), dtype=np.int32)
    S.magnitude_high(base, (x,), active, False, hist, np.zeros((chunks, 1)))
    counts = hist[:, 0].sum(axis=0, dtype=np.int64)
    bucket, n_above, floor = S.bucket_floor(counts, k)
    if floor is not None:
        return floor
    low = np.empty((chunks, 1, S.LOW), dtype=np.int32)
    S.magnitude_low(base, (x,), active, np.array([bucket], dtype=np.uint32), low)
    return S.threshold(low[:, 0], bucket, n_above, k)[0]


def reference(base: np.ndarray, x: np.ndarray, k: int) -> int:
    """The same with torch: δ, then `torch.kthvalue` (what the torch path runs)."""
    delta = torch.from_numpy(x) - torch.from_numpy(base)
    value, _, _ = kth_largest(delta, k, signed=True)
    return int(np.float32(value).view(np.uint32))


def inputs(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    base = rng.standard_normal(N, dtype=np.float32) * 0.02
    x = base + rng.standard_normal(N, dtype=np.float32) * 0.002
    if kind == "bf16":  # round both to bf16 (float32's top 16 bits)
        base = (base.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
        x = (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    return base, x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--density", type=float, default=0.5)
    ap.add_argument("--torch-threads", type=int, default=1, help="as `fusechat merge --threads` (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    k = int(args.density * N)
    rng = np.random.default_rng(0)
    for kind in ("bf16", "float32"):
        base, x = inputs(kind, rng)
        assert radix(base, x, k) == reference(base, x, k), "the two paths disagree"  # also compiles/warms up
        times: dict[str, list[float]] = {"radix": [], "kthvalue": []}
        for _ in range(args.repeat):
            for name, fn in (("radix", radix), ("kthvalue", reference)):
                t0 = time.perf_counter()
                fn(base, x, k)
                times[name].append(time.perf_counter() - t0)
        best = {n: min(t) for n, t in times.items()}
        median = {n: statistics.median(t) for n, t in times.items()}
        ratio, median_ratio = best["kthvalue"] / best["radix"], median["kthvalue"] / median["radix"]
        print(
            f"{kind:8s} radix best {best['radix']:.3f} s median {median['radix']:.3f} s | "
            f"kthvalue best {best['kthvalue']:.3f} s median {median['kthvalue']:.3f} s | "
            f"kthvalue / radix {ratio:.1f}x (medians {median_ratio:.1f}x)"
        )


if __name__ == "__main__":
    main()
