"""The top-k store: compact, sharded, on-disk next-token distributions (a public format, see docs/formats.md).

Teacher stores, aligned stores and training targets share this layout: one Parquet row per conversation with
its token ids and offsets, and at each supervised position the k most likely next tokens with their log-probs,
the gold token's log-prob, and the sums that make cross-entropies comparable across tokenizers. Shards are
written under a temporary name, renamed, and then described by a small sidecar file with their checksum; the
manifest is written (with `complete: true`) only once every shard is in place, so resume is shard by shard and a
half-written shard never looks whole.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fusechat.errors import FusechatError
from fusechat.manifest import (
    atomic_path,
    atomic_write_json,
    file_digest,
    mark_verified,
    read_manifest,
    remove_temporaries,
    sha256_file,
    write_manifest,
)

log = logging.getLogger(__name__)

FORMAT = "fusechat.topk-store"
FORMAT_VERSION = 1
ROW_GROUP_ROWS = 256
# Chosen per column on real data (benchmarks/bench_teach.py): dictionaries only help the id column; offsets and
# positions grow steadily (delta encoding), and float16 log-probs compress best with their bytes split.
PARQUET_OPTIONS = dict(
    compression="zstd",
    compression_level=9,
    use_dictionary=["id"],
    column_encoding={
        "offsets.list.element.list.element": "DELTA_BINARY_PACKED",
        "positions.list.element": "DELTA_BINARY_PACKED",
        "topk_logprobs.list.element.list.element": "BYTE_STREAM_SPLIT",
    },
)


@dataclass
class TopKRecord:
    """One conversation's entry in a top-k store.

    Shapes: `input_ids` (n,), `offsets` (n, 2) character [start, end) in the rendered text, `positions` (p,) the
    token positions t whose next token t+1 is supervised, `topk_ids` and `topk_logprobs` (p, k) most likely
    first, `gold_logprob` (p,) the log-prob of token t+1. `nll` is the float32 sum of -gold_logprob computed
    before rounding; `n_bytes` the UTF-8 length of the conversation's supervised text. `extra` holds optional
    per-position or per-row columns that a stage adds (for example `covered` in an aligned store).
    """

    id: str
    input_ids: np.ndarray
    offsets: np.ndarray
    positions: np.ndarray
    topk_ids: np.ndarray
    topk_logprobs: np.ndarray
    gold_logprob: np.ndarray
    nll: float
    n_bytes: int
    extra: dict[str, np.ndarray | float | int | str] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.topk_ids.shape[1]) if self.topk_ids.ndim == 2 else 0


def base_schema(k: int) -> pa.Schema:
    """The required columns of a store with top-`k` entries."""
    return pa.schema(
        [
            ("id", pa.string()),
            ("input_ids", pa.list_(pa.int32())),
            ("offsets", pa.list_(pa.list_(pa.int32(), 2))),
            ("positions", pa.list_(pa.int32())),
            ("topk_ids", pa.list_(pa.list_(pa.int32(), k))),
            ("topk_logprobs", pa.list_(pa.list_(pa.float16(), k))),
            ("gold_logprob", pa.list_(pa.float16())),
            ("nll", pa.float32()),
            ("n_bytes", pa.int32()),
        ]
    )


def shard_name(index: int, n_shards: int) -> str:
    return f"shard-{index:05d}-of-{n_shards:05d}.parquet"


def _fixed(values: np.ndarray, width: int, value_type: pa.DataType) -> pa.Array:
    """A list<fixed_size_list<width>> cell value from a (rows, width) array."""
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=value_type)
    return pa.FixedSizeListArray.from_arrays(flat, width)


class ShardWriter:
    """Writes one shard: rows are buffered into row groups, the file is renamed into place on `close()`.

    Only the process that owns shard `index` (under its stage's lock) creates its writer, so the writer may
    delete the temporary files an earlier, killed writer of the same shard left behind.
    """

    def __init__(self, store_dir: str | os.PathLike, index: int, n_shards: int, k: int, extra: pa.Schema | None = None):
        self.store_dir, self.index, self.n_shards, self.k = Path(store_dir), index, n_shards, k
        self.schema = base_schema(k)
        for f in extra or []:
            self.schema = self.schema.append(f)
        self.path = self.store_dir / shard_name(index, n_shards)
        for name in (self.path.name, self.path.with_suffix(".json").name):  # what a killed writer left
            remove_temporaries(self.store_dir, name)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        try:
            self._writer = pq.ParquetWriter(self._tmp, self.schema, **PARQUET_OPTIONS)
        except BaseException as e:  # a full disk can refuse the file's first bytes: leave no temporary behind
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise
        self._rows: list[TopKRecord] = []
        self.rows = self.positions = self.tokens = 0

    def write(self, rec: TopKRecord) -> None:
        p = len(rec.positions)
        if rec.topk_ids.shape != (p, self.k) or rec.topk_logprobs.shape != (p, self.k):
            raise ValueError(f"record {rec.id}: top-k arrays must have shape ({p}, {self.k})")
        if rec.gold_logprob.shape != (p,) or rec.offsets.shape != (len(rec.input_ids), 2):
            raise ValueError(f"record {rec.id}: gold_logprob or offsets has the wrong shape")
        self._rows.append(rec)
        self.rows += 1
        self.positions += p
        self.tokens += len(rec.input_ids)
        if len(self._rows) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        rows, k = self._rows, self.k

        def lists(arrays: list[np.ndarray], make) -> pa.Array:
            lengths = np.array([len(a) for a in arrays], dtype=np.int32)
            offs = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            values = make(np.concatenate(arrays) if arrays else np.zeros(0))
            return pa.ListArray.from_arrays(pa.array(offs), values)

        cols: dict[str, pa.Array] = {
            "id": pa.array([r.id for r in rows], pa.string()),
            "input_ids": lists([r.input_ids.astype(np.int32) for r in rows], lambda v: pa.array(v, pa.int32())),
            "offsets": lists(
                [r.offsets.astype(np.int32).reshape(-1, 2) for r in rows], lambda v: _fixed(v, 2, pa.int32())
            ),
            "positions": lists([r.positions.astype(np.int32) for r in rows], lambda v: pa.array(v, pa.int32())),
            "topk_ids": lists(
                [r.topk_ids.astype(np.int32).reshape(-1, k) for r in rows], lambda v: _fixed(v, k, pa.int32())
            ),
            "topk_logprobs": lists(
                [r.topk_logprobs.astype(np.float16).reshape(-1, k) for r in rows],
                lambda v: _fixed(v.astype(np.float16), k, pa.float16()),
            ),
            "gold_logprob": lists(
                [r.gold_logprob.astype(np.float16) for r in rows], lambda v: pa.array(v.astype(np.float16))
            ),
            "nll": pa.array([r.nll for r in rows], pa.float32()),
            "n_bytes": pa.array([r.n_bytes for r in rows], pa.int32()),
        }
        for f in self.schema:
            if f.name in cols:
                continue
            values = [r.extra[f.name] for r in rows]
            if pa.types.is_list(f.type):
                cols[f.name] = pa.array([np.asarray(v).tolist() for v in values], f.type)
            else:
                cols[f.name] = pa.array(values, f.type)
        self._writer.write_table(pa.Table.from_arrays([cols[f.name] for f in self.schema], schema=self.schema))
        self._rows = []

    def close(self) -> dict:
        """Finish the file, rename it into place, write its sidecar; return the shard's description."""
        self._flush()
        self._writer.close()
        self._ctx.__exit__(None, None, None)
        info = {
            "file": self.path.name,
            "index": self.index,
            "rows": self.rows,
            "positions": self.positions,
            "tokens": self.tokens,
            "bytes": self.path.stat().st_size,
            "sha256": sha256_file(self.path),
        }
        mark_verified(self.path, info["sha256"])
        atomic_write_json(self.path.with_suffix(".json"), info)
        return info

    def abort(self) -> None:
        """Drop the temporary file (used when the writer's producer fails)."""
        try:
            self._writer.close()
        finally:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def shard_done(store_dir: str | os.PathLike, index: int, n_shards: int) -> dict | None:
    """The sidecar of a finished shard, or None if the shard is missing, partial, of another size, or its bytes
    differ from the sha256 its sidecar recorded (bit rot, a bad copy): a rerun then rebuilds it. Each shard is
    hashed once per process (cached by size and modification time)."""
    path = Path(store_dir) / shard_name(index, n_shards)
    side = path.with_suffix(".json")
    if not (path.is_file() and side.is_file()):
        return None
    try:
        info = json.loads(side.read_text())
    except json.JSONDecodeError:
        return None
    if info.get("bytes") != path.stat().st_size:
        return None
    if file_digest(path) != info.get("sha256"):
        if path not in _REPORTED:
            _REPORTED.add(path)
            log.warning("%s: does not match the checksum in its sidecar (corrupted); rebuilding it", path)
        return None
    return info


_REPORTED: set[Path] = set()


def finalize(store_dir: str | os.PathLike, manifest: dict, n_shards: int) -> bool:
    """Write the complete manifest if every shard is finished; return whether it was written."""
    infos = [shard_done(store_dir, i, n_shards) for i in range(n_shards)]
    if any(i is None for i in infos):
        return False
    body = dict(manifest)
    body.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        n_shards=n_shards,
        shards=infos,
        counts={
            "conversations": sum(i["rows"] for i in infos),
            "supervised_positions": sum(i["positions"] for i in infos),
            "tokens": sum(i["tokens"] for i in infos),
            "bytes": sum(i["bytes"] for i in infos),
        },
    )
    write_manifest(store_dir, body, complete=True)
    return True


def _flat(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(row bounds, flat leaf values) of a list (or list of fixed-size lists) column, without Python objects."""
    arr = column.combine_chunks()
    bounds = np.asarray(arr.offsets, dtype=np.int64)
    values = arr.values
    if pa.types.is_fixed_size_list(values.type):
        width = values.type.list_size
        flat = values.flatten().to_numpy(zero_copy_only=False)
        base = values.offset * width
        return bounds, flat[base : base + len(values) * width].reshape(-1, width)
    return bounds, values.to_numpy(zero_copy_only=False)


def records_from_table(table: pa.Table, k: int) -> list[TopKRecord]:
    """Split a shard's Arrow table into records with numpy arrays (vectorised; no per-value Python objects)."""
    cols = {n: _flat(table.column(n)) for n in ("input_ids", "offsets", "positions", "topk_ids", "topk_logprobs")}
    cols["gold_logprob"] = _flat(table.column("gold_logprob"))
    ids = table.column("id").to_pylist()
    nll = table.column("nll").to_numpy()
    n_bytes = table.column("n_bytes").to_numpy()
    extra_names = [n for n in table.column_names if n not in base_schema(k).names]
    extras = {}  # list columns as (bounds, flat numpy values); per-row columns as Python values
    for name in extra_names:
        col = table.column(name)
        extras[name] = _flat(col) if pa.types.is_list(col.type) else (None, col.to_pylist())
    out = []

    def cut(name: str, r: int, dtype: type) -> np.ndarray:
        bounds, flat = cols[name]
        return np.array(flat[bounds[r] : bounds[r + 1]], dtype=dtype)

    for r, rid in enumerate(ids):
        out.append(
            TopKRecord(
                id=rid,
                input_ids=cut("input_ids", r, np.int32),
                offsets=cut("offsets", r, np.int32).reshape(-1, 2),
                positions=cut("positions", r, np.int32),
                topk_ids=cut("topk_ids", r, np.int32).reshape(-1, k),
                topk_logprobs=cut("topk_logprobs", r, np.float16).reshape(-1, k),
                gold_logprob=cut("gold_logprob", r, np.float16),
                nll=float(nll[r]),
                n_bytes=int(n_bytes[r]),
                extra={n: (v[r] if b is None else v[b[r] : b[r + 1]]) for n, (b, v) in extras.items()},
            )
        )
    return out


class TopKStore:
    """Read access to a complete store: its manifest, its shards as Arrow tables or as `TopKRecord`s."""

    def __init__(self, directory: str | os.PathLike, stage: str | None = None):
        self.dir = Path(directory)
        self.manifest = read_manifest(self.dir, stage=stage)
        if self.manifest.get("format") != FORMAT:
            raise FusechatError(f"{self.dir}: not a fusechat top-k store (format {self.manifest.get('format')!r})")
        if self.manifest.get("format_version", 0) > FORMAT_VERSION:
            raise FusechatError(
                f"{self.dir}: store format version {self.manifest['format_version']} is newer than this fusechat "
                f"reads ({FORMAT_VERSION}); upgrade fusechat"
            )
        self.k = int(self.manifest["top_k"])
        self.n_shards = int(self.manifest["n_shards"])
        self._checked: set[int] = set()

    def __len__(self) -> int:
        return int(self.manifest["counts"]["conversations"])

    def shard_path(self, index: int) -> Path:
        return self.dir / self.manifest["shards"][index]["file"]

    def check_shard(self, index: int) -> None:
        """Fail unless shard `index` has the size and sha256 its manifest recorded (checked once per store object).

        A truncated or bit-flipped shard can still decode as Parquet (a flipped bit in a float page is valid
        data), so the checksum, not the decoder, decides whether its bytes are the ones the stage wrote.
        """
        if index in self._checked:
            return
        info = self.manifest["shards"][index]
        path = self.dir / info["file"]
        if not path.is_file():
            raise FusechatError(f"{path}: missing from the store; rerun the stage that wrote {self.dir}")
        size = path.stat().st_size
        if size != info.get("bytes", size) or ("sha256" in info and sha256_file(path) != info["sha256"]):
            raise FusechatError(
                f"{path}: does not match the checksum in {self.dir / 'manifest.json'} (truncated or corrupted); "
                f"delete it and rerun the stage that wrote {self.dir}: the rerun rebuilds the missing shard"
            )
        self._checked.add(index)

    def read_table(self, index: int, columns: list[str] | None = None) -> pa.Table:
        path = self.shard_path(index)
        self.check_shard(index)
        try:
            return pq.read_table(path, columns=columns)
        except (OSError, pa.ArrowException) as e:
            raise FusechatError(f"{path}: unreadable shard ({e}); run `fusechat verify {self.dir}`") from None

    def read_shard(self, index: int) -> list[TopKRecord]:
        return records_from_table(self.read_table(index), self.k)

    def __iter__(self) -> Iterator[TopKRecord]:
        for i in range(self.n_shards):
            yield from self.read_shard(i)

    def verify(self) -> list[str]:
        """Check every shard against the manifest's checksums; return the problems found (empty when sound)."""
        problems = []
        for info in self.manifest["shards"]:
            path = self.dir / info["file"]
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif path.stat().st_size != info["bytes"]:
                problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {info['bytes']}")
            elif sha256_file(path) != info["sha256"]:
                problems.append(f"{path}: checksum differs from the manifest (corrupted)")
        return problems
