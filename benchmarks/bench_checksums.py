"""What the read-time checksums cost, measured side by side in one run; see docs/reliability.md.

1. A top-k store shard of the default size (256 conversations of ~1,000 tokens, ~600 supervised positions
each, top-10, as `fusechat teach` writes it) is read the way align, fuse and train read it: Parquet decode
into records, with and without the sha256 check `TopKStore` now makes the first time it opens a shard.
2. A safetensors checkpoint (a 135M-parameter-sized file of random float32 data, or --weights-mb) is hashed
the way `check_model_dir` does before a model is loaded, against reading the same bytes as tensors.
Each figure is the median of --repeats runs with a warm page cache (the case after a stage just wrote its
output; a cold cache costs one extra read of the file in both columns).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def side_by_side(a, b, repeats: int) -> tuple[float, float]:
    """Median seconds of `a` and `b`, run alternately so that load on a shared machine hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((a, times[0]), (b, times[1])):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def realistic_shard(directory: Path, rows: int, tokens: int, positions: int, k: int) -> Path:
    from fusechat.store.format import ShardWriter, TopKRecord, finalize

    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    writer = ShardWriter(directory, 0, 1, k)
    for r in range(rows):
        ids = rng.integers(0, 49152, tokens).astype(np.int32)
        ends = np.cumsum(rng.integers(1, 6, tokens)).astype(np.int32)
        offsets = np.stack([ends - 1, ends], axis=1)
        pos = np.sort(rng.choice(tokens - 1, positions, replace=False)).astype(np.int32)
        lp = np.sort(-rng.exponential(2.0, (positions, k)), axis=1)[:, ::-1].astype(np.float16)
        writer.write(
            TopKRecord(
                f"c{r}", ids, offsets, pos, rng.integers(0, 49152, (positions, k)).astype(np.int32), lp,
                lp[:, 0].copy(), float(-lp[:, 0].sum()), int(ends[-1]),
            )
        )  # fmt: skip
    writer.close()
    finalize(directory, {"stage": "teach", "top_k": k}, 1)
    return directory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--positions", type=int, default=600)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--weights-mb", type=int, default=540)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()

    import torch
    from safetensors.torch import load_file, save_file

    from fusechat.manifest import sha256_file
    from fusechat.store.format import TopKStore

    with tempfile.TemporaryDirectory() as tmp:
        store_dir = realistic_shard(Path(tmp) / "store", args.rows, args.tokens, args.positions, args.k)
        shard = next(store_dir.glob("*.parquet"))

        def read(check: bool):
            store = TopKStore(store_dir)
            if not check:
                store._checked.add(0)  # what reading cost before the check existed
            store.read_shard(0)

        plain, checked = side_by_side(lambda: read(False), lambda: read(True), args.repeats)
        mb = shard.stat().st_size / 1e6
        print(f"store shard: {mb:.1f} MB, {args.rows} rows x {args.positions} positions x top-{args.k}")
        print(f"  read into records: {plain * 1e3:.0f} ms; with the sha256 check: {checked * 1e3:.0f} ms")
        print(f"  checked / unchecked: {checked / plain:.2f}x (+{(checked - plain) * 1e3:.0f} ms per shard)")

        n = args.weights_mb * 1_000_000 // 4
        path = Path(tmp) / "model.safetensors"
        save_file({"w": torch.randn(n)}, str(path))

        def load():  # every byte read into tensors the caller owns, as loading a model for training does
            return {k: v.clone() for k, v in load_file(str(path)).items()}

        hashing, loading = side_by_side(lambda: sha256_file(path), load, args.repeats)
        print(f"checkpoint: {path.stat().st_size / 1e6:.0f} MB safetensors")
        print(f"  sha256: {hashing:.2f} s ({path.stat().st_size / 1e9 / hashing:.2f} GB/s); load as tensors: "
              f"{loading:.2f} s; hash / load: {hashing / loading:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
