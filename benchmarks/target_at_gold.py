"""How good is a training target *in the pivot's token space*? (issue 18, docs/results.md section 4)

The fuse manifest's `bits_per_byte` scores each candidate by its own cross-entropy on its own tokens (MinCE's
score). What the fusion term trains toward is something else: the store's top-k distribution at each of the
pivot's supervised positions, renormalised over the kept ids (the training loss reads it that way without
`--tail-bucket`). Where a source's tokens do not line up with the pivot's, or the pivot's gold token has no image
in the source's vocabulary, that distribution gives the gold token nothing, and the fusion term pushes the
student away from the text it is trained on. This prints, per store: its own-token bits per byte, the bits per
byte of the pivot's gold tokens under the renormalised top-k where they are kept, and the share of positions
where the gold token gets no mass.

    python benchmarks/target_at_gold.py RUN/teach/pivot RUN/align/qwen RUN/fuse/pair-qwen ...

The first store must be the pivot's teacher store (its bytes are the denominator).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def rows(store: Path) -> list[dict]:
    out: list[dict] = []
    for shard in sorted(store.glob("shard-*.parquet")):
        out += pq.read_table(shard).to_pylist()
    return out


def main() -> None:
    stores = [Path(a) for a in sys.argv[1:]]
    if not stores:
        sys.exit(__doc__)
    n_bytes = sum(r["n_bytes"] for r in rows(stores[0]))
    bits = 1.0 / (math.log(2) * n_bytes)
    print(f"{'store':34s} {'own-token':>9s} {'at gold':>8s} {'gold kept':>9s} {'gold gets 0':>11s}")
    for store in stores:
        own = at_gold = 0.0
        n = missed = 0
        for r in rows(store):
            own += r["nll"]
            for j, pos in enumerate(r["positions"]):
                gold = r["input_ids"][pos + 1]
                ids, lps = r["topk_ids"][j], np.asarray(r["topk_logprobs"][j], dtype=np.float64)
                n += 1
                finite = np.isfinite(lps)
                if gold not in ids or not finite[ids.index(gold)]:
                    missed += 1
                    continue
                at_gold -= lps[ids.index(gold)] - np.log(np.exp(lps[finite]).sum())
        print(
            f"{str(store)[-34:]:34s} {own * bits:9.4f} {at_gold * bits:8.4f} {1 - missed / n:9.3f} "
            f"{missed / n:7.3f} ({missed})"
        )


if __name__ == "__main__":
    main()
