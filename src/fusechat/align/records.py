"""Columnar reading of a store shard into `TopKRecord`s, without a Python object per token.

`TopKStore.read_shard` goes through `Table.to_pylist()`, which builds a Python float for every top-k entry:
for a shard of real conversations that costs more than aligning them. This reader slices the flattened Arrow
columns with numpy instead (same records, tested equal to `read_shard`). It stays local to the alignment and
fusion stages; store.py is shared code.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fusechat.store import TopKRecord, TopKStore, base_schema


def _split(column: pa.ChunkedArray, width: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (flat values, row bounds); `width` > 1 for lists of fixed-size lists."""
    arr = column.combine_chunks()
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    flat = arr.flatten()
    if width > 1:
        flat = flat.flatten()
    values = flat.to_numpy(zero_copy_only=False)
    return values, offsets - offsets[0]


def read_records(store: TopKStore, index: int) -> list[TopKRecord]:
    """The records of shard `index`, as `store.read_shard(index)` returns them."""
    table = store.read_table(index)
    k = store.k
    ids = table.column("id").to_pylist()
    inp, inp_b = _split(table.column("input_ids"))
    off, off_b = _split(table.column("offsets"), 2)
    pos, pos_b = _split(table.column("positions"))
    tid, tid_b = _split(table.column("topk_ids"), k)
    tlp, tlp_b = _split(table.column("topk_logprobs"), k)
    gold, gold_b = _split(table.column("gold_logprob"))
    nll = table.column("nll").to_numpy()
    n_bytes = table.column("n_bytes").to_numpy()
    extra_names = [n for n in table.column_names if n not in base_schema(k).names]
    extras = {}
    for name in extra_names:
        col = table.column(name)
        extras[name] = _split(col) if pa.types.is_list(col.type) else (col.to_pylist(), None)
    out = []
    for r, rid in enumerate(ids):
        extra = {}
        for name, (values, bounds) in extras.items():
            extra[name] = values[r] if bounds is None else values[bounds[r] : bounds[r + 1]]
        out.append(
            TopKRecord(
                id=rid,
                input_ids=inp[inp_b[r] : inp_b[r + 1]].astype(np.int32, copy=False),
                offsets=off[2 * off_b[r] : 2 * off_b[r + 1]].astype(np.int32, copy=False).reshape(-1, 2),
                positions=pos[pos_b[r] : pos_b[r + 1]].astype(np.int32, copy=False),
                topk_ids=tid[k * tid_b[r] : k * tid_b[r + 1]].astype(np.int32, copy=False).reshape(-1, k),
                topk_logprobs=tlp[k * tlp_b[r] : k * tlp_b[r + 1]].astype(np.float16, copy=False).reshape(-1, k),
                gold_logprob=gold[gold_b[r] : gold_b[r + 1]].astype(np.float16, copy=False),
                nll=float(nll[r]),
                n_bytes=int(n_bytes[r]),
                extra=extra,
            )
        )
    return out
