"""Reading checkpoint tensors one at a time and writing sharded safetensors one tensor at a time.

Inputs are read tensor by tensor with `pread` into buffers the merge owns, straight from each shard's byte
range as the safetensors header gives it. (Memory-mapping the shards gives the same streaming, but every page
a mapping touches stays in the process's resident set until it is unmapped, so a merge that mmaps three 1 GB
models shows 3 GB of RSS; owned buffers keep the resident set at the few tensors in flight.) The output header
is known before any data (shapes and dtypes come from the inputs), so each output shard is written in one
sequential pass and never buffered whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusechat.errors import FusechatError
from fusechat.merge import dtypes
from fusechat.merge.buffers import BufferPool
from fusechat.merge.shard_file import ShardFile
from fusechat.models.load import PICKLE_SUFFIXES

INDEX = "model.safetensors.index.json"
DIRECT_ALIGN = 4096  # O_DIRECT: offsets, lengths and memory aligned to the block size (4096 covers all here)


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype, shape and byte range (absolute offsets in the file)."""

    file: Path
    dtype: str  # safetensors code (BF16, F32, ...): see merge/dtypes.py
    shape: tuple[int, ...]
    start: int
    end: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse a safetensors file's header into TensorInfo records (no tensor data is read)."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FusechatError(f"{path}: not a readable safetensors file ({e})") from None
    base = 8 + size
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in dtypes.NUMPY:
            raise FusechatError(f"{path}: tensor {name} has unsupported dtype {meta['dtype']}")
        start, end = meta["data_offsets"]
        out[name] = TensorInfo(path, meta["dtype"], tuple(meta["shape"]), base + start, base + end)
    return out


class Checkpoint:
    """One input model directory: its config and a name → TensorInfo map over all its shards."""

    def __init__(self, directory: Path, allow_pickle: bool = False, checksums: dict[Path, str] | None = None) -> None:
        """`checksums`: sha256 digests (file → hex) to check as the files are read; see `verify_checksums`."""
        self.directory = directory
        self.config = json.loads((directory / "config.json").read_text())
        files = sorted(directory.glob("*.safetensors"))
        self._pickled: dict[str, Any] = {}  # name → torch tensor (pickles need torch to load)
        self.tensors: dict[str, TensorInfo] = {}
        if files:
            for f in files:
                for name, info in read_header(f).items():
                    if name in self.tensors:
                        raise FusechatError(f"{directory}: tensor {name} appears in two shards")
                    self.tensors[name] = info
        else:
            self._load_pickled(allow_pickle)
        self._fds: dict[Path, int] = {}
        self._direct_fds: dict[Path, int] | None = {} if hasattr(os, "O_DIRECT") else None
        self._hashing = {f: _RunningHash(f, digest) for f, digest in (checksums or {}).items()}
        self._lock = threading.Lock()  # reads may come from several threads (a base that is also an input)
        self._all_fds: list[int] = []

    def _load_pickled(self, allow_pickle: bool) -> None:
        pickled = sorted(p for p in self.directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        pickled = [p for p in pickled if not p.name.startswith("training_args")]
        if not pickled:
            raise FusechatError(f"{self.directory}: no weights (*.safetensors) found")
        if not allow_pickle:
            raise FusechatError(
                f"{self.directory}: weights are pickled ({pickled[0].name}); loading a pickle can run "
                "arbitrary code. Convert them to safetensors, or pass --allow-pickle if you trust the source"
            )
        import torch

        for p in pickled:  # mmap: tensors are paged in when read, not all at once
            state = torch.load(p, map_location="cpu", mmap=True, weights_only=True)
            self._pickled.update(state)

    def names(self) -> list[str]:
        return list(self._pickled) if self._pickled else list(self.tensors)

    def names_in_file_order(self) -> list[str]:
        """The tensor names as their bytes lie on disk (shard by shard, by offset); pickles in natural order."""
        if self._pickled:
            return iter_names_sorted(self._pickled)
        files = {f: i for i, f in enumerate(sorted({t.file for t in self.tensors.values()}))}
        return sorted(self.tensors, key=lambda n: (files[self.tensors[n].file], self.tensors[n].start))

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._pickled[name].shape) if self._pickled else self.tensors[name].shape

    def dtype(self, name: str) -> str:
        """The tensor's safetensors dtype code."""
        if self._pickled:
            return next(c for c, n in dtypes.TORCH_NAMES.items() if str(self._pickled[name].dtype) == f"torch.{n}")
        return self.tensors[name].dtype

    def nbytes(self, name: str) -> int:
        if self._pickled:
            t = self._pickled[name]
            return t.numel() * t.element_size()
        info = self.tensors[name]
        return info.end - info.start

    def buffer_bytes(self, name: str) -> int:
        """The size of the pooled buffer `read` takes for the tensor (its block-aligned range for O_DIRECT)."""
        if self._pickled:
            return 0
        info = self.tensors[name]
        if self._direct_fds is None:
            return info.end - info.start
        start, stop = _aligned(info)
        return stop - start + DIRECT_ALIGN  # room to align the buffer's start too

    def read(self, name: str, pool: BufferPool | None = None) -> np.ndarray:
        """The tensor's data in a buffer the caller owns, as an array of its stored dtype (bf16 as uint16 bits,
        see merge/dtypes.py) and shape: a new one, or one taken from `pool` (given back when done)."""
        if self._pickled:
            return dtypes.from_torch(self._pickled[name].clone())[0]
        info = self.tensors[name]
        if pool is not None:
            direct = self._read_direct(name, info, pool)
            if direct is not None:
                return direct
        fd = self._fd(self._fds, info.file, os.O_RDONLY)
        n = info.end - info.start
        buf = pool.take(n) if pool is not None else np.empty(n, dtype=np.uint8)
        _read_into(fd, buf, info.start, n, info.file, name)
        self._hashed(info, buf[:n], pool)
        return dtypes.view(buf[:n], info.dtype, info.shape)

    def _read_direct(self, name: str, info: TensorInfo, pool: BufferPool) -> np.ndarray | None:
        """The tensor read with O_DIRECT into a pooled buffer (the disk writes straight into it), or None.

        A buffered read lands in the page cache and is then copied out; from freshly read pages that copy was the
        largest single cost of a merge (docs/benchmarks.md). O_DIRECT needs block-aligned offsets, lengths and memory,
        so the aligned range around the tensor is read and the tensor is a view into it. Unsupported filesystems (tmpfs)
        fall back, once.
        """
        fds = self._direct_fds
        if fds is None:
            return None
        try:
            fd = self._fd(fds, info.file, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
        except OSError:
            self._direct_fds = None
            return None
        start, stop = _aligned(info)
        raw = pool.take(self.buffer_bytes(name))
        pad = -raw.ctypes.data % DIRECT_ALIGN
        if (pad + info.start - start) % dtypes.itemsize(info.dtype):
            pool.give(raw)
            return None  # the tensor would start misaligned for its dtype: read it the buffered way
        region = raw[pad : pad + stop - start]
        try:
            _read_into(fd, region, start, info.end - start, info.file, name)
        except OSError:  # EINVAL: this filesystem does not do O_DIRECT after all (its fds close in `close`)
            pool.give(raw)
            self._direct_fds = None
            return None
        data = region[info.start - start : info.end - start]
        self._hashed(info, data, pool)
        return dtypes.view(data, info.dtype, info.shape)

    def _fd(self, fds: dict[Path, int], path: Path, flags: int) -> int:
        """The open descriptor of `path` in `fds`, opened once even when two threads ask at once."""
        with self._lock:
            if path not in fds:
                fds[path] = os.open(path, flags)
                self._all_fds.append(fds[path])
            return fds[path]

    def _hashed(self, info: TensorInfo, data: np.ndarray, pool: BufferPool | None) -> None:
        """Feed a file's running checksum; the pool reuses the buffer only once it is hashed."""
        running = self._hashing.get(info.file)
        if running is not None:
            hashed = running.update(info.start, info.end, data)
            if hashed is not None and pool is not None:
                pool.hold(data, hashed)

    def verify_checksums(self) -> None:
        """Fail, naming the file, unless each file given `checksums` hashes to its digest.

        Bytes are hashed as `read` returns them while reads go forward through a file without gaps (a merge
        reading in file order); what was skipped is then read here (the tail, or the whole file if the reads
        jumped). A model's bytes are thus read once instead of twice, and hashed beside the reads rather than in a
        serial pass of their own before the merge.
        """
        for running in self._hashing.values():
            running.finish()
        self._hashing.clear()

    def close(self) -> None:
        for fd in self._all_fds:
            os.close(fd)
        self._all_fds.clear()
        self._fds.clear()
        self._direct_fds = {} if hasattr(os, "O_DIRECT") else None


_HASHER = ThreadPoolExecutor(1, "input-hash")  # one thread: each file's blocks are hashed in the order read


class _RunningHash:
    """sha256 of one file, fed by reads in file order; `finish` reads what the reads did not cover.

    Hashing runs on a thread of its own, beside the reads and the merge (hashlib releases the GIL); a block's
    buffer stays alive (and out of the pool) until it is hashed.
    """

    def __init__(self, path: Path, digest: str) -> None:
        self.path, self.digest = path, digest
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            f.seek(0)
            prefix = f.read(8 + n)
        self.hash = hashlib.sha256(prefix)
        self.pos = len(prefix)  # bytes [0, pos) are hashed, or queued to be
        self.jumped = False
        self.last: Future | None = None
        self._lock = threading.Lock()  # a base that is also an input is read by two threads at once

    def update(self, start: int, end: int, data: np.ndarray) -> Future | None:
        """Queue the bytes [start, end) for hashing if they come next in the file; the job's future, or None."""
        with self._lock:
            if self.jumped or end <= self.pos:  # read again (a base that is also an input): already hashed
                return None
            if start != self.pos:
                self.jumped = True
                return None
            self.last = _HASHER.submit(self.hash.update, memoryview(data))
            self.pos = end
            return self.last

    def finish(self) -> None:
        from fusechat.manifest import checksum_mismatch, mark_verified, sha256_file

        if self.last is not None:
            self.last.result()
        if self.jumped:
            digest = sha256_file(self.path)
        else:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                while block := f.read(1 << 22):
                    self.hash.update(block)
            digest = self.hash.hexdigest()
        if digest != self.digest:
            raise checksum_mismatch(self.path)
        mark_verified(self.path, digest)


def _aligned(info: TensorInfo) -> tuple[int, int]:
    """The tensor's byte range widened to whole blocks, as O_DIRECT reads it."""
    return info.start // DIRECT_ALIGN * DIRECT_ALIGN, -(-info.end // DIRECT_ALIGN) * DIRECT_ALIGN


def _read_into(fd: int, buf: np.ndarray, offset: int, needed: int, path: Path, name: str) -> None:
    """pread into the uint8 array `buf` from `offset` until at least `needed` bytes arrived (or all of buf)."""
    view = memoryview(buf)
    done = 0
    while done < needed:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise FusechatError(f"{path}: ends before tensor {name} does; the file is truncated")
        done += got


@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: str  # safetensors code
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * dtypes.itemsize(self.dtype)


def plan_shards(tensors: Sequence[OutputTensor], max_shard_bytes: int) -> list[list[OutputTensor]]:
    """Split tensors, in order, into shards of at most `max_shard_bytes` (a bigger tensor gets its own)."""
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def shard_names(n: int) -> list[str]:
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


class ShardedWriter:
    """Writes planned shards in order, one tensor at a time; `write` must follow the planned order."""

    def __init__(self, directory: Path, shards: list[list[OutputTensor]], metadata: dict[str, str]) -> None:
        self.directory = directory
        self.shards = shards
        self.files = shard_names(len(shards))
        self.metadata = metadata
        self._order = [(i, t) for i, shard in enumerate(shards) for t in shard]
        self._next = 0
        self._file = None
        self._shard = -1
        self.bytes_written = 0
        self.entries: dict[str, dict[str, object]] = {}  # file → {bytes, sha256}, as a manifest lists them

    def _open(self, index: int) -> None:
        self._finish()
        header: dict[str, object] = {"__metadata__": self.metadata}
        offset = 0
        for t in self.shards[index]:
            header[t.name] = {
                "dtype": t.dtype,
                "shape": list(t.shape),
                "data_offsets": [offset, offset + t.nbytes],
            }
            offset += t.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._file = ShardFile(self.directory / self.files[index])
        self._file.write(struct.pack("<Q", len(blob)) + blob)
        self._shard = index

    def _finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self.entries[self.files[self._shard]] = {"bytes": self._file.size, "sha256": self._file.sha256}
            self._file = None

    def write(self, name: str, array: np.ndarray) -> None:
        """Write the next planned tensor: `array` of its planned shape, held as its code's numpy dtype."""
        shard, planned = self._order[self._next]
        if planned.name != name or array.shape != planned.shape or array.dtype != dtypes.NUMPY[planned.dtype]:
            raise RuntimeError(f"writer expected {planned}, got {name} {array.shape} {array.dtype}")
        if shard != self._shard:
            self._open(shard)
        data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        self._file.write(data)
        self.bytes_written += data.nbytes
        self._next += 1

    def close(self) -> dict[str, str]:
        """Finish the last shard, write the index when there are several shards; returns name → file."""
        if self._next != len(self._order):
            raise RuntimeError(f"writer closed after {self._next} of {len(self._order)} tensors")
        self._finish()
        weight_map = {t.name: self.files[i] for i, t in self._order}
        if len(self.shards) > 1:
            total = sum(t.nbytes for _, t in self._order)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return weight_map

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()
            self._file = None


def iter_names_sorted(names: Iterable[str]) -> list[str]:
    """Tensor names in a stable natural order (layers 2 before 10), so shards group whole layers."""
    import re

    def key(name: str) -> list[object]:
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]

    return sorted(names, key=key)
